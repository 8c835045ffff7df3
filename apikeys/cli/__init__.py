"""The command line: `apikeys` (main), the commands `flask --app app` has too (commands), their helpers."""
