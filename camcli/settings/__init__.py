"""Settings of an ``explain`` run: the options (:mod:`.fields`), where their values come from
(:mod:`.sources`), and the checks on them (:mod:`.checks`)."""

from camcli.engine import DEFAULT_MAX_PIXELS
from camcli.settings.checks import cam_batch_size_for, check, parse_shard
from camcli.settings.fields import (EVALUATE_KEYS, FIELDS, OUTPUT_KEYS, PRESENTATION_KEYS, ExplainSettings, kind,
                                   shown_default)
from camcli.settings.sources import read_config, read_env, resolve

__all__ = ["DEFAULT_MAX_PIXELS", "EVALUATE_KEYS", "FIELDS", "OUTPUT_KEYS", "PRESENTATION_KEYS", "ExplainSettings", "cam_batch_size_for",
           "check", "kind", "parse_shard", "read_config", "read_env", "resolve", "shown_default"]
