"""CLI option strings and recipe lists -> configs; unknown names listed with close matches, never corrected."""

from __future__ import annotations

import pytest

from edgepack.compress import (
    DropLayersConfig,
    FinetuneConfig,
    LowRankConfig,
    NdLinearConfig,
    PruneConfig,
    SparseConfig,
    options_help,
    parse_options,
    parse_pass,
    parse_recipe,
)
from edgepack.errors import UsageError


def test_prune_forms():
    assert parse_pass("prune", "0.5") == PruneConfig(ratio=0.5)
    config = parse_pass("prune", "ratio=0.5,importance=taylor,round_to=8,global=true,steps=3")
    assert config == PruneConfig(ratio=0.5, importance="taylor", round_to=8, global_pruning=True, steps=3)
    assert parse_pass("prune", "0.3, heads=0.5, ignore=layer1,layer2") == PruneConfig(
        ratio=0.3, heads=0.5, ignore=("layer1", "layer2"))


def test_lowrank_forms():
    assert parse_pass("lowrank", "energy=0.9") == LowRankConfig(energy=0.9)
    assert parse_pass("lowrank", "ratio=0.5") == LowRankConfig(ratio=0.5)
    config = parse_pass("lowrank", "rank=16,min_params=0,layers=fc,classifier,targets=all")
    assert config == LowRankConfig(rank=16, min_params=0, layers=("fc", "classifier"), targets="all")


def test_other_kinds():
    assert parse_pass("drop-layers", "1,2") == DropLayersConfig(indices=(1, 2))
    assert parse_pass("drop-layers", "middle=2") == DropLayersConfig(middle=2)
    assert parse_pass("finetune", "3") == FinetuneConfig(epochs=3)
    assert parse_pass("finetune", "epochs=2,lr=1e-4") == FinetuneConfig(epochs=2, lr=1e-4)
    assert parse_pass("ndlinear", "") == NdLinearConfig()
    assert parse_pass("ndlinear", "layers=blocks.0.mlp,epochs=2") == NdLinearConfig(layers=("blocks.0.mlp",), epochs=2)
    assert parse_pass("sparse", "ratio=0.7,global=yes", extra={"allow_sparse": True}) == SparseConfig(
        ratio=0.7, allow_sparse=True, global_pruning=True)


@pytest.mark.parametrize("kind, text, message", [
    ("prune", "ratio=0.5,importnce=l1", "unknown option 'importnce' (did you mean 'importance'?)"),
    ("prune", "1.5", "prune ratio=1.5 is outside (0, 1)"),
    ("prune", "0", "outside (0, 1)"),
    ("prune", "ratio=0.5,importance=taylr", "importance='taylr' is not one of: l1, l2, group, taylor"),
    ("prune", "ratio=half", "ratio='half' is not a number"),
    ("prune", "ratio=0.5,global=maybe", "global='maybe' must be true or false"),
    ("prune", "ratio=0.5,steps=0", "steps=0 is below 1"),
    ("prune", "importance=l1", "ratio is required"),
    ("prune", "0.5,0.6", "'0.6' is not key=value"),
    ("prune", "ratio=0.5,ratio=0.6", "ratio is given twice"),
    ("lowrank", "min_params=10", "exactly one of ratio="),
    ("lowrank", "ratio=0.5,rank=4", "got ratio and rank"),
    ("lowrank", "energy=1.5", "outside (0, 1]"),
    ("lowrank", "rank=0", "rank=0 is below 1"),
    ("lowrank", "rank=4,targets=convs", "targets='convs' is not one of: linear, conv, all"),
    ("drop-layers", "1,1", "repeat a block"),
    ("drop-layers", "-1", "index=-1 is below 0"),
    ("drop-layers", "1,middle=2", "not both"),
    ("finetune", "0", "epochs=0 is below 1"),
    ("finetune", "three", "'three' is not a whole number"),
    ("sparse", "0.5", "--allow-sparse"),
])
def test_parse_errors_are_one_line_usage_errors(kind, text, message):
    with pytest.raises(UsageError) as info:
        parse_pass(kind, text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_kind_lists_the_known_ones():
    with pytest.raises(UsageError, match=r"unknown pass 'prun' \(did you mean 'prune'\?\); known passes: prune"):
        parse_pass("prun", "0.5")


def test_recipe_list():
    configs = parse_recipe([
        {"prune": {"ratio": 0.5, "global": True}},
        {"lowrank": {"energy": 0.9, "layers": ["fc", "head"]}},
        {"drop_layers": {"middle": 1}},
        {"drop-layers": [0, 2]},
        {"sparse": {"ratio": 0.5, "allow_sparse": True}},
        {"ndlinear": None},
        {"finetune": 3},
        {"prune": "0.25,steps=2"},
    ])
    assert configs == [
        PruneConfig(ratio=0.5, global_pruning=True), LowRankConfig(energy=0.9, layers=("fc", "head")),
        DropLayersConfig(middle=1), DropLayersConfig(indices=(0, 2)), SparseConfig(ratio=0.5, allow_sparse=True),
        NdLinearConfig(), FinetuneConfig(epochs=3), PruneConfig(ratio=0.25, steps=2),
    ]


def test_recipe_errors_name_the_step():
    with pytest.raises(UsageError, match=r"recipe step 2 \(lowrank\): unknown option 'enrgy'.*'energy'"):
        parse_recipe([{"prune": 0.5}, {"lowrank": {"enrgy": 0.9}}])
    with pytest.raises(UsageError, match="recipe step 1: unknown pass 'prunning'"):
        parse_recipe([{"prunning": 0.5}])
    with pytest.raises(UsageError, match="recipe step 1: expected one mapping"):
        parse_recipe([{"prune": 0.5, "finetune": 2}])
    with pytest.raises(UsageError, match="must be true or false"):
        parse_recipe([{"prune": {"ratio": 0.5, "global": "sometimes"}}])
    with pytest.raises(UsageError, match="is a list of single-key mappings"):
        parse_recipe({"prune": 0.5})


def test_configs_round_trip_through_their_dicts():
    configs = [PruneConfig(ratio=0.5, ignore=("a",), heads=0.25), LowRankConfig(rank=4, layers=("fc",)),
               DropLayersConfig(indices=(1, 2)), FinetuneConfig(epochs=2)]
    assert parse_recipe([{c.kind: c.to_dict()} for c in configs]) == configs


def test_options_help_lists_defaults():
    text = options_help("prune")
    assert text.startswith("ratio=<required>, importance=group, global=false, round_to=8, steps=1")
    assert "layers=" in options_help("lowrank")


def test_allow_sparse_flag_reaches_sparse_passes_only():
    assert parse_pass("sparse", "0.5", allow_sparse=True) == SparseConfig(ratio=0.5, allow_sparse=True)
    assert parse_pass("prune", "0.5", allow_sparse=True) == PruneConfig(ratio=0.5)
    assert parse_pass("finetune", "2", allow_sparse=False) == FinetuneConfig(epochs=2)
    assert parse_recipe([{"sparse": 0.5}], allow_sparse=True) == [SparseConfig(ratio=0.5, allow_sparse=True)]
    with pytest.raises(UsageError, match="--allow-sparse"):
        parse_recipe([{"sparse": 0.5}])


def test_recipe_from_a_yaml_file(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("- prune: {ratio: 0.5, global: true}\n- lowrank: {energy: 0.9, layers: [fc]}\n- finetune: 2\n")
    expected = [PruneConfig(ratio=0.5, global_pruning=True), LowRankConfig(energy=0.9, layers=("fc",)),
                FinetuneConfig(epochs=2)]
    assert parse_recipe(path) == expected
    path.write_text("passes:\n  - prune: 0.5\n")
    assert parse_recipe(path) == [PruneConfig(ratio=0.5)]
    path.write_text("pases:\n  - prune: 0.5\n")
    with pytest.raises(UsageError, match="found keys pases"):
        parse_recipe(path)
    path.write_text("- prune: [0.5\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        parse_recipe(path)
    with pytest.raises(UsageError, match="cannot read it"):
        parse_recipe(tmp_path / "missing.yaml")


def test_recipes_may_spell_kinds_with_underscores_or_hyphens():
    assert parse_recipe([{"low-rank": "rank=4"}, {"fine-tune": 2}, {"drop_layers": "middle=1"}]) == [
        LowRankConfig(rank=4), FinetuneConfig(epochs=2), DropLayersConfig(middle=1)]


def test_options_given_one_by_one_are_coerced_like_a_recipe():
    assert parse_options("prune", {"ratio": "0.5", "global": "yes", "ignore": "a,b"}) == PruneConfig(
        ratio=0.5, global_pruning=True, ignore=("a", "b"))
    assert parse_options("sparse", {"ratio": 0.5}, allow_sparse=True) == SparseConfig(ratio=0.5, allow_sparse=True)
    with pytest.raises(UsageError, match=r"^edgepack distill: unknown option 'epoch' \(did you mean 'epochs'\?\)"):
        parse_options("distill", {"width": "0.5", "epoch": "3"}, where="edgepack distill")
    with pytest.raises(UsageError, match="--prune: ratio is required"):
        parse_options("prune", {"importance": "l1"})
