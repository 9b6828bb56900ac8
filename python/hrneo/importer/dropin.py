"""`hrneo run --hydraroute DIR`: a HydraRoute Neo directory as the daemon's config.

Tools that manage HydraRoute Neo (awg-manager, HRweb) write its files and then
restart or signal it; with this loader they drive hrneo the same way. The
directory is converted in memory with the rules of `hrneo import hydraroute`
at start and on every SIGHUP (the daemon calls the loader with `Config.path`,
which is the directory).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Sequence

from hrneo.config import Config, ConfigError, load_config
from hrneo.importer.core import ImportFailure
from hrneo.importer.hydraroute import SYS_CLASS_NET, import_hydraroute
from hrneo.importer.render import OUT_CONFIG, write_out


def load_hydraroute_config(
    directory: str,
    *,
    base: str | None = None,
    interfaces: Sequence[str] = (),
    net_dir: str = SYS_CLASS_NET,
) -> tuple[Config, list[str]]:
    """Convert HydraRoute directory `directory` into a Config; return (config, warnings).

    Same contract as :func:`hrneo.config.load_config`: raises ConfigError with
    `file:line` errors. `base`: an hrneo config whose settings (nflog group,
    firewall, control socket...) are used, with `policies: []`; the policies
    come from HydraRoute. The returned Config's `path` is `directory`.
    """
    try:
        result = import_hydraroute(directory, interfaces, net_dir)
    except ImportFailure as e:
        raise ConfigError([str(e)]) from None
    label = f"{directory} (converted)"
    with tempfile.TemporaryDirectory(prefix="hrneo-hydraroute-") as tmp:
        try:
            # Big policies go to list files, the loader's fast path.
            write_out(result, directory, tmp)
        except OSError as e:
            raise ConfigError([f"{directory}:0: cannot convert: {e}"]) from None
        try:
            cfg, warnings = load_config(os.path.join(tmp, OUT_CONFIG))
        except ConfigError as e:
            raise ConfigError(
                [m.replace(tmp, label) for m in e.errors],
                [m.replace(tmp, label) for m in e.warnings],
            ) from None
    warnings = [*result.warnings, *(m.replace(tmp, label) for m in warnings)]
    # Where domains "were written" names the directory, not the deleted temporary files.
    for i, s in enumerate(cfg.watchlist.sources):
        cfg.watchlist.set_source(i, s.replace(tmp, label))
    policies = tuple(
        dataclasses.replace(p, domain_files=tuple(f.replace(tmp, label) for f in p.domain_files))
        for p in cfg.policies
    )
    cfg = dataclasses.replace(cfg, policies=policies)
    if base is not None:
        base_cfg, base_warnings = load_config(base)
        if base_cfg.policies:
            msg = (
                f"{base}:0: with a HydraRoute directory the policies come from it: "
                "write `policies: []` here"
            )
            raise ConfigError([msg], base_warnings)
        cfg = dataclasses.replace(base_cfg, policies=cfg.policies, watchlist=cfg.watchlist)
        warnings = [*base_warnings, *warnings]
    return dataclasses.replace(cfg, path=directory), warnings
