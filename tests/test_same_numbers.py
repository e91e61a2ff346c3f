"""benchmarks/same_numbers.py, the check that a reorganisation changes no number: it reads back everything a run
logged and saved, finds nothing between a run and itself, and names each kind of difference."""

import copy

from benchmarks.same_numbers import differences, logged


def test_a_run_read_back_equals_itself_and_every_kind_of_change_is_named(algo, train, tmp_path):
    result = train(algo, save_model=True, run_name="r")
    a = logged(tmp_path / "runs" / "r")
    assert a["scalars"]["losses/qf_loss"] and "charts/SPS" not in a["scalars"] and a["text"]
    assert "actor.net.0.weight" in a["weights"] or "actor.trunk.0.weight" in a["weights"]
    assert differences(a, logged(tmp_path / "runs" / "r")) == [] and result["global_step"] == 600

    b = copy.deepcopy(a)
    step, value = b["scalars"]["losses/qf_loss"][-1]
    b["scalars"]["losses/qf_loss"][-1] = (step, value * (1 + 1e-7))
    b["text"] = b["text"][1:]
    name = next(iter(b["weights"]))
    b["weights"][name] = b["weights"][name].clone()
    b["weights"][name].view(-1)[0] += 1e-6
    assert differences(a, b) == ["scalar losses/qf_loss", "hyperparameter table", f"weights {name}"]
