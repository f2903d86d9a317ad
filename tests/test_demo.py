"""The demo's job runner: dependencies, jobs side by side, failures that keep what is done;
the time each part took, kept across reruns."""

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from demo import SCALES, Job, JobFailed, Runner, Timings, done, pretrain  # noqa: E402


def test_jobs_run_side_by_side_after_what_they_need(tmp_path):
    runner = Runner(2, tmp_path / "logs")
    lock, running, most, order, active = threading.Lock(), [0], [0], [], {}

    def work(name, *inputs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            order.append(name)
            active[name] = runner.active  # what divides the cores among the commands
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return [name, *inputs]

    results = runner.run(
        {
            "a": Job(lambda: work("a")),
            "b": Job(lambda: work("b")),
            "c": Job(lambda: work("c")),
            "d": Job(lambda a, c: work("d", a, c), after=("a", "c")),
        }
    )
    assert results["d"] == ["d", ["a"], ["c"]]  # each result goes to the jobs after it
    assert most[0] == 2  # never more than two at a time, and two did run together
    assert order.index("d") == 3
    assert active["a"] == 2 and active["d"] == 1  # the last job left gets every core


def test_a_failed_job_lets_the_running_one_finish_and_starts_no_more(tmp_path):
    runner = Runner(2, tmp_path / "logs")
    finished = []

    def slow():
        time.sleep(0.2)
        finished.append("slow")

    def fail():
        raise JobFailed("job 'broken' failed")

    jobs = {
        "slow": Job(slow),
        "broken": Job(fail),
        "later": Job(lambda: finished.append("later")),
    }
    with pytest.raises(JobFailed, match="broken"):
        runner.run(jobs)
    assert finished == ["slow"]


def test_a_failing_command_names_its_log(tmp_path):
    runner = Runner(2, tmp_path / "logs")
    with pytest.raises(JobFailed, match="job 'x' failed .*x.log"):
        runner.emu("x", "pretrain", "--backend", "nope", "--data", tmp_path, "--out", tmp_path)
    log = (tmp_path / "logs" / "x.log").read_text()
    assert log.startswith("$ emu pretrain --backend nope") and "unknown backend 'nope'" in log


def test_a_job_waiting_on_a_missing_job_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"\['b'\] wait on jobs that never run"):
        Runner(2, tmp_path).run({"a": Job(lambda: 1), "b": Job(lambda x: x, after=("nope",))})


def test_a_part_keeps_its_time_on_a_rerun_and_a_resumed_part_adds_each_try(tmp_path):
    path = tmp_path / "out" / "timings.json"
    first = Timings(path)
    with first.part("masked/pre"):
        (path.parent / "masked" / "pre").mkdir(parents=True)
        time.sleep(0.05)
    with pytest.raises(KeyboardInterrupt), first.part("masked/qt"):
        (path.parent / "masked" / "qt").mkdir()
        time.sleep(0.05)
        raise KeyboardInterrupt  # killed halfway
    again = Timings(path)  # the next invocation reuses the pre-trained model, resumes the tuning
    with again.part("masked/qt"):
        time.sleep(0.05)
    assert again.total("masked/pre") == first.seconds["masked/pre"] >= 0.05
    assert again.total("masked/qt") >= 0.1
    assert again.total("masked/pre", "masked/qt", "never-run") == pytest.approx(
        first.seconds["masked/pre"] + again.seconds["masked/qt"]
    )
    (path.parent / "masked" / "qt").rmdir()  # moved aside: tuned again from nothing
    with again.part("masked/qt"):
        pass
    assert again.total("masked/qt") < 0.05
    assert Timings(path).total("masked/qt") == again.total("masked/qt")


def test_an_output_older_than_what_it_was_made_from_is_not_done(tmp_path):
    model, results = tmp_path / "emu.json", tmp_path / "results.json"
    model.write_text("{}")
    assert not done(results, after=(model,))
    results.write_text("{}")
    os.utime(model, (time.time() - 60,) * 2)
    assert done(results, after=(model,))
    os.utime(model, (time.time() + 60,) * 2)  # tuned again after the evaluation
    assert not done(results, after=(model,)) and done(results)
    results.write_text(json.dumps({"images_per_prompt": 1}))
    assert done(results, recorded={"images_per_prompt": 1})
    assert not done(results, recorded={"images_per_prompt": 2})  # a smaller evaluation


def test_a_finished_pretraining_is_reused_and_an_unfinished_one_resumed(tmp_path):
    run, logs = tmp_path / "masked" / "pre", tmp_path / "logs"
    timings = Timings(tmp_path / "timings.json")
    (run / "stages").mkdir(parents=True)  # a finished run keeps its stages' logs here
    provenance = {"backend": "masked", "stages_completed": ["tokenizer", "transformer"]}
    (run / "emu.json").write_text(json.dumps(provenance))
    assert pretrain(Runner(2, logs), timings, tmp_path, "masked", SCALES["quick"]) == run
    assert not logs.exists() and timings.seconds == {}  # no command ran, no time counted
    (run / "emu.json").write_text(json.dumps({**provenance, "stages_completed": ["tokenizer"]}))
    with pytest.raises(JobFailed):  # there is no pool here, but the command was the right one
        pretrain(Runner(2, logs), timings, tmp_path, "masked", SCALES["quick"])
    assert "--resume latest" in (logs / "masked-pretrain.log").read_text()
