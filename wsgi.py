"""The gunicorn entry point: ``gunicorn wsgi:app``."""

from gateway.app import create_app
from gateway.config import Config

app = create_app(Config.from_env())
