"""The distiller's side of a training procedure: which stage is running and what it freezes, what
each phase trains, the epochs of each stage, the ``init`` copies. The trainer asks; the
:class:`~kdsl.runtime.distiller.Distiller` (which mixes this in) answers from its
:class:`~kdsl.lang.procedure.Procedure` and the modules the compiler resolved.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn

from kdsl.core.diagnostics import error
from kdsl.lang import ir
from kdsl.lang.visit import find
from kdsl.lang.procedure import Phase, Procedure, Stage


class Staging:
    """Stages, freezes and trainable parameters of a :class:`~kdsl.runtime.distiller.Distiller`.

    Expects of its host: ``procedure``, ``models`` (a ModuleDict), ``connectors``, ``terms``,
    ``student_name``, and ``_scopes`` (scope text -> module), ``_inits`` ((target, source)
    module pairs), ``_generators`` (names)."""

    procedure: Procedure

    def _setup_staging(self) -> None:
        # requires_grad as compiled (frozen teachers off): what lifting a freeze restores
        self._base_grad: Dict[nn.Parameter, bool] = {p: p.requires_grad for p in self._all_params()}
        self._frozen_params: List[nn.Parameter] = []
        self._frozen_modules: List[nn.Module] = []
        self._stage: Optional[str] = None
        self._phase_terms: Dict[Tuple[str, str], list] = {}
        by_name = {t.name: t for t in self.terms}
        for s in self.procedure.stages:
            for p in s.phases:
                self._phase_terms[(s.name, p.name)] = [by_name[n] for n in p.losses if n in by_name]
        if self.procedure.stages:
            self.begin_stage(self.procedure.stages[0].name)

    def _all_params(self) -> Iterable[nn.Parameter]:
        seen = set()
        for m in [self] + list(self._frozen.values()):
            for p in m.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield p

    # -- stages ------------------------------------------------------------------------------
    @property
    def stage(self) -> Optional[str]:
        """The stage running now (the first until :meth:`begin_stage` says otherwise)."""
        return self._stage

    def stage_ranges(self, total_epochs: int) -> List[Tuple[Stage, int, int]]:
        """``(stage, first epoch, end epoch)`` per stage, end exclusive (KD220 where the stages
        break the epoch rule of :mod:`kdsl.lang.procedure`)."""
        return self.procedure.ranges(total_epochs)

    def begin_stage(self, name: str) -> None:
        """Enter stage ``name``: lift the previous stage's freezes and apply this one's
        (``requires_grad`` off for its ``freeze`` scopes, top-level ones and frozen connectors).

        A frozen scope is also held in eval mode, as detection backbones hold their frozen stages:
        its norm layers keep their running statistics, so the module computes exactly what it did
        when it was frozen, not only with the same parameters."""
        stage = self.procedure.stage(name)
        self._lift_freezes()
        frozen = self._params_of(stage.freeze)
        for p in frozen:
            p.requires_grad_(False)
        self._frozen_params = frozen
        self._frozen_modules = [self._scopes[s] for s in stage.freeze if s in self._scopes]
        for m in self._frozen_modules:
            m.eval()
        self._stage = stage.name

    def _lift_freezes(self) -> None:
        for p in self._frozen_params:
            p.requires_grad_(self._base_grad.get(p, True))
        self._frozen_params = []
        lifted, self._frozen_modules = self._frozen_modules, []
        for m in lifted:
            m.train(self.training)

    def _hold_frozen_in_eval(self) -> None:
        """Called by ``train()``: frozen scopes stay in eval mode whatever the distiller's mode."""
        for m in getattr(self, "_frozen_modules", ()):
            m.eval()

    def _params_of(self, scopes: Iterable[str]) -> List[nn.Parameter]:
        out: List[nn.Parameter] = []
        seen = set()
        for scope in scopes:
            module = self._scopes.get(scope)
            if module is None:
                continue
            for p in module.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        return out

    def _resolve(self, stage: Optional[str], phase: Optional[str]) -> Tuple[Stage, Phase]:
        """The stage (``None``: the one running) and phase (``None``: its only one) named."""
        st = self.procedure.stage(stage if stage is not None else self._stage)
        if phase is not None:
            return st, st.phase(phase)
        if len(st.phases) != 1:
            raise error("KD514", f"stage '{st.name}' has {len(st.phases)} phases: name one "
                        f"(phase=...): " + ", ".join(p.name for p in st.phases))
        return st, st.phases[0]

    # -- what trains -------------------------------------------------------------------------
    def trainable_parameters(self, stage: Optional[str] = None,
                             phase: Optional[str] = None) -> List[nn.Parameter]:
        """The parameters the optimizer of ``(stage, phase)`` updates, in a stable order.

        Its ``optimize`` targets (its own, else its stage's, else the top level's), else the
        default: with no stage, phase or input declared, every trainable parameter of the distiller
        (``parameters()``, as a plain run); otherwise the student, trainable teachers and the
        connectors its losses apply (never a generator). The phase's learning losses (VID, CRD)
        always train with it. Frozen scopes of the stage and the phase, frozen connectors and
        frozen teachers are left out."""
        st, ph = self._resolve(stage, phase)
        terms = self._phase_terms[(st.name, ph.name)]
        if ph.optimize:
            modules: List[nn.Module] = [self._scopes[s] for s in ph.optimize if s in self._scopes]
        elif not self.procedure.declared:
            modules = [self]
        else:
            used = {c.connector for t in terms for e in t.inputs if e is not None
                    for c in find(e, ir.ConnectorApply)}
            modules = [m for n, m in self.models.items() if n not in self._generators]
            modules += [m for n, m in self.connectors.items() if n in used]
        modules += [t.module for t in terms]
        frozen = {id(p) for p in self._params_of(st.freeze + ph.freeze)}
        out: List[nn.Parameter] = []
        seen = set()
        for m in modules:
            for p in m.parameters():
                if id(p) in seen or id(p) in frozen or not self._base_grad.get(p, p.requires_grad):
                    continue
                seen.add(id(p))
                out.append(p)
        return out

    def trainable_models(self) -> Dict[str, nn.Module]:
        """The models a run trains and saves: the student, trainable teachers, generators."""
        return dict(self.models.items())

    def apply_inits(self) -> None:
        """``init A from B``: copy B's parameters and buffers into A's, by name (once, when a
        fresh run starts; the shapes were checked when compiling)."""
        with torch.no_grad():
            for target, source in self._inits:
                have = source.state_dict()
                for key, value in target.state_dict().items():
                    value.copy_(have[key])
