"""``Upload``: a multipart file field whose bytes are in memory, and nothing else.

A text value where a file was expected (such as a URL) is refused with its own validation error type,
``upload_type``, which the app turns into a 400 ``url_not_allowed``: nothing is ever fetched on a client's
behalf. The OpenAPI schema of the field is a binary file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic_core import PydanticCustomError, core_schema
from starlette.datastructures import UploadFile


@dataclass(frozen=True)
class Upload:
    """An uploaded file: its bytes, the name and the content type the client gave it."""

    data: bytes
    filename: str = "upload"
    content_type: str | None = None

    @classmethod
    def from_upload_file(cls, upload: UploadFile) -> Upload:
        # Starlette spools the part in memory (or, over 1 MB, in a temporary file); reading it is synchronous.
        upload.file.seek(0)
        return cls(upload.file.read(), upload.filename or "upload", upload.content_type)

    @classmethod
    def _validate(cls, value: Any) -> Upload:
        if isinstance(value, Upload):
            return value
        if isinstance(value, UploadFile):
            return cls.from_upload_file(value)
        raise PydanticCustomError("upload_type", "expected an uploaded file, got a text value")

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(cls._validate)

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> dict:
        return {"type": "string", "format": "binary"}
