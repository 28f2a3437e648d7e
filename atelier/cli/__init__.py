"""The `atelier` command line (typer + rich): a thin front end over the tool layer."""
