"""The WSGI entry point that gunicorn and ``flask --app app`` find."""

from apikeys import create_app

app = create_app()
