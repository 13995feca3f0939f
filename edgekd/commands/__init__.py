"""CLI command groups, one module per area. Each module imports only typer at top level and
defines `register(app)`; the command bodies import the library function they wrap."""
