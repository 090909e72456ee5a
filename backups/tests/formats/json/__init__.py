"""Tests of the json payload (backups/formats/json/): which models, the format, round trips,
refusals, streaming."""
