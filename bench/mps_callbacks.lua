-- wrk script of the intake benchmark (bench/intake.py): POST distinct, validly signed MPS callbacks.
--
-- Environment, set by bench/intake_load.py (run_phase):
--   BENCH_BODY_TEMPLATE  path of a signed JSON body holding @@TASK_ID@@ once
--   BENCH_RUN_NONCE      unique per wrk run, so that no run repeats a task id
--
-- Every request carries TaskId "bench-<thread>-<counter>-<nonce>". The MPS
-- signature does not cover the body, so one Timestamp/Sign signs them all.
-- A repeated task id would be answered "duplicate", which is cheaper and would
-- flatter the receiver: the response hook counts any answer that is not
-- 200 "accepted", and done() prints the totals on "bench-lua:" lines that
-- bench/wrk.py parses.

local PLACEHOLDER = "@@TASK_ID@@"

-- Main Lua state: one entry per wrk thread, read back in done().
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

-- Per-thread Lua state (each wrk thread loads this file anew).
local prefix, suffix, nonce
local counter = 0
responses = 0
non200 = 0
not_accepted = 0
statuses = {}

function init(args)
  local path = os.getenv("BENCH_BODY_TEMPLATE")
  nonce = os.getenv("BENCH_RUN_NONCE")
  assert(path and nonce, "BENCH_BODY_TEMPLATE and BENCH_RUN_NONCE must be set")
  local file = assert(io.open(path, "rb"))
  local template = file:read("*a")
  file:close()
  local first, last = string.find(template, PLACEHOLDER, 1, true)
  assert(first, "the body template has no " .. PLACEHOLDER)
  prefix = string.sub(template, 1, first - 1)
  suffix = string.sub(template, last + 1)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  counter = counter + 1
  local body = prefix .. "bench-" .. id .. "-" .. counter .. "-" .. nonce .. suffix
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  responses = responses + 1
  if status ~= 200 then
    non200 = non200 + 1
    local key = tostring(status)
    statuses[key] = (statuses[key] or 0) + 1
  elseif not string.find(body, '"accepted"', 1, true) then
    not_accepted = not_accepted + 1
  end
end

function done(summary, latency, requests)
  local total, bad, unaccepted, by_status = 0, 0, 0, {}
  for _, thread in ipairs(threads) do
    total = total + thread:get("responses")
    bad = bad + thread:get("non200")
    unaccepted = unaccepted + thread:get("not_accepted")
    for status, count in pairs(thread:get("statuses")) do
      by_status[status] = (by_status[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(by_status) do
    parts[#parts + 1] = status .. ":" .. count
  end
  table.sort(parts)
  io.write(string.format("bench-lua: responses=%d non200=%d not_accepted=%d statuses=%s\n",
    total, bad, unaccepted, table.concat(parts, ",")))
  local e = summary.errors
  io.write(string.format("bench-lua: errors connect=%d read=%d write=%d status=%d timeout=%d\n",
    e.connect, e.read, e.write, e.status, e.timeout))
end
