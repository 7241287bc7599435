"""`python -m kimidocs.kimi.emulator [options]`: the same as `kimidocs emulator [options]`."""

import typer

from kimidocs.kimi.emulator.command import register

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
register(app)

if __name__ == "__main__":
    app()
