"""Options that several commands share: the models named on the command line."""

from __future__ import annotations

import typer

STUDENT = typer.Option(None, "--student", help="student model, pkg.module:factory(k=v)")
TEACHER = typer.Option(None, "--teacher", help="teacher model reference")
MODEL = typer.Option([], "--model", help="NAME=REF for any model of the spec")
TEACHER_CKPT = typer.Option(None, "--teacher-ckpt", help="teacher weights (replaces `from`)")
