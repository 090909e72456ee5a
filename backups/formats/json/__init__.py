"""The portable ``json`` payload format (see ``payload``)."""
