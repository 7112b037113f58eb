"""``python -m emulator``: run the local Tencent Cloud emulator until interrupted."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from emulator.actions import served_actions
from emulator.answers import load_directory
from emulator.app import Emulator
from emulator.config import DEFAULT_RATE_LIMITS, Config, default_credentials, default_vod_sign_key, first_key
from emulator.faults import CHOICES, Faults
from emulator.server import EmulatorServer

DESCRIPTION = """\
Local emulator of the Tencent Cloud API 3.0 actions the receiver uses (MPS 2019-06-12,
VOD 2018-07-17, AMS 2020-12-29). Verifies TC3-HMAC-SHA256 signatures, runs tasks through
WAITING -> PROCESSING -> FINISH, sends signed callbacks, enforces per-action rate limits,
and injects faults. Point the official SDK clients at it with
HttpProfile(protocol="http", endpoint="127.0.0.1:PORT").

Task markers: a create request with the string "emulator:fail" in any field (e.g. SessionContext,
an AMS DataId) finishes with an error; "emulator:no-callback" never calls back.
Admin routes: GET /_emulator/stats, GET /_emulator/calls, GET|POST /_emulator/faults, POST /_emulator/answers,
POST /_emulator/reset, GET /_emulator/health.
"""


def _rate_limit(text: str) -> tuple[tuple[str, str], int]:
    try:
        name, value = text.split("=", 1)
        service, action = name.split(".", 1)
        return (service.lower(), action), int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected SERVICE.Action=N (ams.DescribeTaskDetail=20): {text!r}") from exc


def build_parser() -> argparse.ArgumentParser:
    secret_id, secret_key = default_credentials()
    parser = argparse.ArgumentParser(prog="python -m emulator", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    parser.add_argument("--port", type=int, default=9000, help="port to listen on (default %(default)s)")
    auth = parser.add_argument_group("credentials")
    auth.add_argument("--secret-id", default=secret_id,
                      help="accepted SecretId (default: $TENCENTCLOUD_SECRET_ID, else AKIDlocalemulator)")
    auth.add_argument("--secret-key", default=secret_key,
                      help="its SecretKey (default: $TENCENTCLOUD_SECRET_KEY, else local-emulator-secret)")
    tasks = parser.add_argument_group("tasks and callbacks")
    tasks.add_argument("--processing-after", type=float, default=0.2, metavar="SECONDS",
                       help="a task turns PROCESSING this long after creation (default %(default)s)")
    tasks.add_argument("--finish-after", type=float, default=0.5, metavar="SECONDS",
                       help="a task turns FINISH this long after creation (default %(default)s)")
    tasks.add_argument("--vod-sign-key", default=default_vod_sign_key(),
                       help="VOD event SignKey (default: first of $VOD_SIGN_KEYS, else local-demo-vod-key)")
    tasks.add_argument("--image-notify-url", default="",
                       help="NotifyUrl for ProcessImage tasks, standing for the orchestration (ScheduleId) "
                            "an image task notifies through (default: none, image tasks do not call back)")
    tasks.add_argument("--image-notify-key", default="",
                       help="NotifyKey for those callbacks (default: first of $MPS_NOTIFY_KEYS)")
    tasks.add_argument("--vod-notify-url", default="",
                       help="where VOD events go for applications without a ModifyEventConfig PUSH URL")
    tasks.add_argument("--callback-retries", type=int, default=3, help="retries of a failed callback (default 3)")
    tasks.add_argument("--callback-backoff", type=float, default=0.2, metavar="SECONDS",
                       help="first retry delay, doubled each retry (default %(default)s)")
    tasks.add_argument("--callback-timeout", type=float, default=5.0, metavar="SECONDS",
                       help="time-out of one callback POST (default %(default)s)")
    tasks.add_argument("--answers", type=Path, metavar="DIR",
                       help="serve the Describe answers of a realworld-format directory as is, each for the task id "
                            "its Response holds (top-level TaskId, else its task object's: WorkflowTask.TaskId, "
                            "EditMediaTask.TaskId, ProcedureTask.TaskId...); files without a task id (e.g. "
                            "DescribeImageTaskDetail), DescribeTasks and ProcessImage answers are skipped "
                            "(install those at POST /_emulator/answers)")
    limits = parser.add_argument_group("rate limits")
    limits.add_argument("--rate-limit", type=_rate_limit, action="append", default=[], metavar="SERVICE.Action=N",
                        help="override one action's requests/second, repeatable (e.g. ams.DescribeTaskDetail=5)")
    faults = parser.add_argument_group("faults (also settable at POST /_emulator/faults)")
    faults.add_argument("--latency", type=float, default=0.0, metavar="SECONDS", help="added to every API answer")
    faults.add_argument("--error-rate", type=float, default=0.0, metavar="P", help="probability of InternalError")
    faults.add_argument("--force-rate-limit", action="store_true", help="answer every call RequestLimitExceeded")
    faults.add_argument("--callback-drop", type=float, default=0.0, metavar="P", help="probability a callback is lost")
    faults.add_argument("--callback-duplicate", type=float, default=0.0, metavar="P",
                        help="probability a callback is sent twice")
    faults.add_argument("--callback-reorder", action="store_true",
                        help="hold a task's callbacks and send them newest first when it finishes")
    faults.add_argument("--callback-delay", type=float, default=0.0, metavar="SECONDS",
                        help="wait before sending each callback")
    faults.add_argument("--never-callback", action="store_true", help="tasks never call back")
    faults.add_argument("--batch-callback-without-task-id", action="store_true",
                        help="BatchTask callbacks carry no TaskId (the SDK's BatchSubTaskResult has none): "
                             "the receiver must find the task through its SessionId")
    faults.add_argument("--image-task-ids", choices=CHOICES["image_task_ids"], default="token",
                        help="id form of ProcessImage tasks: token (64 characters, as ProcessImage answers in "
                             "Tencent's example) or workflow (<appid>-WorkflowTask-<hex>, as "
                             "DescribeImageTaskDetail's examples query; DescribeTaskDetail still does not know "
                             "them) (default %(default)s)")
    parser.add_argument("--log-level", default="INFO", help="logging level (default %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.answers is not None and not args.answers.is_dir():
        parser.error(f"--answers: {args.answers} is not a directory")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = Config(
        credentials={args.secret_id: args.secret_key}, processing_after=args.processing_after,
        finish_after=args.finish_after, vod_sign_key=args.vod_sign_key, vod_notify_url=args.vod_notify_url,
        image_notify_url=args.image_notify_url,
        image_notify_key=args.image_notify_key or first_key("MPS_NOTIFY_KEYS"),
        callback_retries=args.callback_retries, callback_backoff=args.callback_backoff,
        callback_timeout=args.callback_timeout, rate_limits={**DEFAULT_RATE_LIMITS, **dict(args.rate_limit)},
    )
    faults = Faults(latency=args.latency, error_rate=args.error_rate, force_rate_limit=args.force_rate_limit,
                    callback_drop=args.callback_drop, callback_duplicate=args.callback_duplicate,
                    callback_reorder=args.callback_reorder, callback_delay=args.callback_delay,
                    never_callback=args.never_callback,
                    batch_callback_without_task_id=args.batch_callback_without_task_id,
                    image_task_ids=args.image_task_ids)
    answers = load_directory(args.answers, served_actions()) if args.answers else []
    emulator = Emulator(config, faults, answers)
    server = EmulatorServer((args.host, args.port), emulator)
    emulator.start()

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for answer in answers:
        logging.getLogger("emulator").info("installed answer %s", answer.describe())
    logging.getLogger("emulator").info("listening on http://%s:%d (SecretId %s)", args.host, server.server_port,
                                       args.secret_id)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        emulator.stop()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
