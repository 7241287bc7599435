"""`python -m kimidocs.emulator [options]`: the same as `kimidocs emulator [options]`."""

import typer

from kimidocs.emulator.command import register

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
register(app)

if __name__ == "__main__":
    app()
