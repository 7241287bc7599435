"""The one error a profile declaration raises: which file, which key, what is wrong.

It subclasses `prompts.ProfileError`, so code that already catches a bad built-in profile
(the pipeline, `kimidocs plan`) catches a bad declared one too.
"""

from __future__ import annotations

from pathlib import Path

from prompts import ProfileError

__all__ = ["DeclarationError", "ProfileError"]


class DeclarationError(ProfileError):
    """A `profile.toml` that cannot be used. Raised before any call is made.

    `key` is a dotted path into the file (`tasks.terms.fields.effective_date.type`), or "" when the
    file as a whole is wrong (missing, not TOML).
    """

    def __init__(self, file: Path | str, key: str, problem: str) -> None:
        self.file = str(file)
        self.key = key
        self.problem = problem
        where = f"{self.file}: {key}" if key else self.file
        super().__init__(f"{where}: {problem}")
