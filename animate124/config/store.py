"""Register every schema in Hydra's ConfigStore and the (few) OmegaConf resolvers. The only import-time side effects.

Each YAML in configs/<group>/ starts with ``defaults: [base_<name>, _self_]`` so that it is validated against its schema.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from animate124.config import export as E
from animate124.config import phases as P
from animate124.config import rerender as R
from animate124.config import schema as S

_PHASES = {f"base_{spec.kind.value}": spec.config for spec in P.PHASES}
"""phase/base_<kind> → its schema (from the one phase table, config/phases.py::PHASES)."""


def default_run_dir(run_dir: str | None, case: str | None, image: str | None, data: str | None) -> str:
    """outputs/<case name | image stem | dataset folder name>, unless run_dir is given."""
    if run_dir:
        return str(run_dir)
    for candidate in (case, Path(image).stem if image else None, Path(data).name if data else None):
        if candidate:
            return str(Path("outputs") / candidate)
    return "outputs/run"


def register() -> None:
    """Idempotent registration of schemas and resolvers."""
    cs = ConfigStore.instance()
    cs.store(name="base_run", node=S.RunConfig)
    cs.store(name="base_export", node=E.ExportConfig)
    cs.store(name="base_metrics", node=E.MetricsConfig)
    cs.store(name="base_rerender", node=R.RerenderConfig)
    for name, node in _PHASES.items():
        cs.store(group="phase", name=name, node=node)
    cs.store(group="field", name="base_field", node=S.FieldConfig)
    cs.store(group="render", name="base_render", node=S.RenderConfig)
    cs.store(group="models", name="base_models", node=S.ModelsConfig)
    cs.store(group="case", name="base_case", node=S.CaseConfig)
    cs.store(group="data", name="base_data", node=S.DataConfig)
    if not OmegaConf.has_resolver("a124_run_dir"):
        OmegaConf.register_new_resolver(
            "a124_run_dir", default_run_dir, use_cache=False
        )


register()
