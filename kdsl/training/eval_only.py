"""``--eval-only``: evaluate a run's saved models (student.pt, models/NAME.pt of the trained
teachers) and the frozen teachers, without training; a killed run's files that disagree with its
checkpoint are repaired first. Functions of the :class:`~kdsl.training.loop.Trainer` that set
the run up."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from kdsl.core.diagnostics import error
from kdsl.training.evaluate import evaluate, evaluate_models, result_rows
from kdsl.training.report import RunResult
from kdsl.training.resume import repair

if TYPE_CHECKING:
    from kdsl.training.loop import Trainer


def repair_before_eval(trainer: "Trainer") -> None:
    """Before ``eval_only`` reads the saved models: repair those that disagree with the run's
    checkpoint (a run of another spec is evaluated as it is)."""
    if not (trainer.dist.main and trainer.run_dir.has_checkpoint()):
        return
    state = trainer.run_dir.load_run_checkpoint(trainer.device)
    if state["spec"] != trainer.fingerprint:
        return
    trainer.restore_models(state)
    trainer.teachers, trainer.history = state.get("teachers"), list(state["history"])
    saved = state["config"].get("epochs")
    epochs = saved if isinstance(saved, int) and not isinstance(saved, bool) and saved >= 1 else trainer.cfg.epochs
    repair(trainer, state, trainer.distiller.stage_ranges(epochs))


def evaluate_run(trainer: "Trainer") -> RunResult:
    """``eval_only``: the run's saved models (student.pt, models/NAME.pt of the trained
    teachers) and the frozen teachers on the validation set. Writes nothing, except files a
    killed run left disagreeing with its checkpoint (of this spec), which it repairs first."""
    if trainer.data is None:
        raise error("KD702", "--eval-only needs validation data: the run has none",
                    hint="pass --data")
    t_start = time.time()
    repair_before_eval(trainer)
    trainer.run_dir.read_student_into(trainer.distiller.student)
    for name in trainer.peers:
        trainer.run_dir.read_model_into(trainer.distiller.model(name), name)
    teachers = trainer.evaluate_teachers()
    args = trainer.eval_args()
    student = evaluate(trainer.distiller.student, *args)
    peers = evaluate_models(trainer.distiller, trainer.peers, *args)
    result = RunResult(final=student or {}, history=[], teachers=teachers, best=None,
                       summary={"teachers": teachers, "peers": peers, "student": student},
                       rows=result_rows(trainer.distiller, teachers, peers, student), files=trainer.run_dir.files(),
                       seconds=time.time() - t_start, eval_only=True, config=trainer.cfg.describe(), peers=peers)
    trainer.reporter.run_end(result)
    return result
