"""VOD media files: upload sessions (ApplyUpload -> CommitUpload) and the files they create, per application.

Nothing is stored but the metadata: the emulator has no bucket, so a file
"exists" once its upload is committed, whether or not anything was PUT.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

# VOD's categories follow the container (Upload Overview); anything unlisted is a video.
AUDIO_TYPES = frozenset({"mp3", "m4a", "flac", "wav", "amr", "aac", "wma"})
IMAGE_TYPES = frozenset({"jpg", "jpeg", "png", "gif", "bmp", "tiff", "ai", "cdr", "eps", "webp", "heic"})
NEVER_EXPIRES = "9999-12-31T23:59:59Z"


def new_file_id() -> str:
    """A 19-digit decimal id like real VOD file ids (e.g. 5285890784246869930)."""
    return str(10**18 + secrets.randbelow(9 * 10**18))


def new_session_key() -> str:
    # Real keys are long opaque base64 strings; the receiver must only pass them back.
    return secrets.token_urlsafe(96)


def new_event_handle() -> str:
    """An event's handle: unique per event, repeated only when the same event is sent again."""
    return secrets.token_hex(16)


def category(media_type: str) -> str:
    kind = media_type.lower()
    return "Audio" if kind in AUDIO_TYPES else "Image" if kind in IMAGE_TYPES else "Video"


@dataclass(frozen=True)
class UploadSession:
    """What ApplyUpload promised: the FileId is allocated here, as its storage path already names it."""

    key: str
    sub_app_id: int
    file_id: str
    created_at: float
    bucket: str
    region: str
    media_path: str
    cover_path: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MediaFile:
    """A committed file; frozen, so answers can read it without the store's lock."""

    file_id: str
    sub_app_id: int
    created_at: float
    media_type: str
    name: str
    media_url: str
    cover_url: str
    region: str
    storage_path: str
    class_id: int
    expire_time: str
    source_context: str
    procedure_task_id: str = ""


class MediaStore:
    """Upload sessions and files of every VOD application; thread-safe."""

    def __init__(self) -> None:
        self._sessions: dict[str, UploadSession] = {}
        self._files: dict[tuple[int, str], MediaFile] = {}
        self._lock = threading.Lock()

    def open_session(self, session: UploadSession) -> None:
        with self._lock:
            self._sessions[session.key] = session

    def take_session(self, key: str, sub_app_id: int) -> UploadSession | None:
        """The session, used up: a key commits one file, and only in the application that applied for it."""
        with self._lock:
            session = self._sessions.get(key)
            if session is None or session.sub_app_id != sub_app_id:
                return None
            return self._sessions.pop(key)

    def add(self, media: MediaFile) -> None:
        with self._lock:
            self._files[(media.sub_app_id, media.file_id)] = media

    def get(self, sub_app_id: int, file_id: str) -> MediaFile | None:
        with self._lock:
            return self._files.get((sub_app_id, file_id))

    def remove(self, sub_app_id: int, file_id: str) -> MediaFile | None:
        with self._lock:
            return self._files.pop((sub_app_id, file_id), None)

    def reset(self) -> None:
        with self._lock:
            self._sessions.clear()
            self._files.clear()
