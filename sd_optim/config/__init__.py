"""The run config: its dataclasses (model), the reader of plain data and YAML files (reader), safe YAML loading (safe_yaml).

:func:`load_config` and :func:`config_from_dict` validate everything and raise one
:class:`~sd_optim.errors.ConfigError` listing every problem as ``field.path: message, got value``;
nothing runs on a bad config.
"""

from .model import (  # noqa: F401  (the config's public names)
    BASELINES,
    CONFIRM_TOP_MAX,
    ITEM_KINDS,
    MEANS,
    MERGE_PRECISIONS,
    MODES,
    ON_ERROR,
    PRUNERS,
    SAMPLERS,
    SCORER_PATH_OPTIONS,
    STRATEGIES,
    AfterRun,
    Bounds,
    EarlyStopping,
    Guide,
    LoraInput,
    MergeSettings,
    ModelInput,
    OptimizerSettings,
    Payload,
    RecipeSettings,
    RunConfig,
    ScorerSettings,
    ScoringSettings,
    Strategy,
)
from .reader import ConfigReader, config_from_dict, load_config, save_config  # noqa: F401
