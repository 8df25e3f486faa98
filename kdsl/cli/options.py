"""Options that several commands share: the models named on the command line."""

from __future__ import annotations

import typer

STUDENT = typer.Option(None, "--student", metavar="REF", help="student model, pkg.module:factory(k=v)")
TEACHER = typer.Option(None, "--teacher", metavar="REF", help="teacher model reference")
MODEL = typer.Option([], "--model", metavar="NAME=REF", help="NAME=REF for any model of the spec")
TEACHER_CKPT = typer.Option(None, "--teacher-ckpt", metavar="PATH", help="teacher weights (replaces `from`)")
