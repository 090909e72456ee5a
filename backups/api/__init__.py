"""The JSON API on each clinic's host (``/api/v1/``): the console's backup actions for a clinic's own front end.

Plain Django views returning JSON (see ``views``), authenticated by the console's session
(with CSRF) or a per-user API token (``access``), described by an OpenAPI document
(``openapi``). Every rule is the console's: the same services, permissions and scoping.
"""
