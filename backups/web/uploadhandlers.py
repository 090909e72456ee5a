"""Upload handlers (Django's own module name for them): the one that bounds an uploaded file.

Django reads an upload before the view runs; to refuse a file past the size limit without
writing gigabytes to a temporary file first, a view swaps in :class:`SizeLimitHandler`, which
stops reading at the limit. The console's upload page and the API's upload route both use it.
"""

from __future__ import annotations

from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import HttpRequest


class SizeLimitHandler(FileUploadHandler):
    """Stops reading an uploaded file once it is larger than ``limit`` bytes."""

    def __init__(self, request: HttpRequest, limit: int) -> None:
        super().__init__(request)
        self.limit = limit
        self.received = 0
        self.declared: int | None = None
        self.exceeded = False
        self.file_name = ""

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        # A declared length past the limit is refused at the file's first byte (the form's small
        # fields before it are still read, the CSRF token among them).
        if content_length and content_length > self.limit + 64 * 1024:
            self.exceeded = True
            self.declared = content_length

    def refused_size(self) -> int:
        """The refused file's size as far as known: the bytes read before stopping, or the declared length."""
        return max(self.received, self.declared or 0)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.exceeded or self.received > self.limit:
            self.exceeded = True
            # The rest of the body is read and thrown away, so the browser gets the page.
            raise StopUpload(connection_reset=False)
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None
