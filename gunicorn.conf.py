"""gunicorn's settings for this site (read from the working directory by ``gunicorn`` in the Procfile).

The access log never writes a query string: a download link's signature (``?sig=…``) is a
credential (``clinic_site/log_redaction.py``). ``%(U)s`` is the path alone.
"""

access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "-" "%(a)s"'
