"""The sentences of the JSON payload format's complaints (backups/formats/json/), by message id."""

MESSAGES: dict[str, str] = {}
