"""The lr schedule of a run that --max_minutes ends: its milestones fall by the clock too (trainer.Trainer._clock),
and a resumed run keeps a milestone where the clock made it fall."""
from types import SimpleNamespace

from trainer import Trainer


def clocked(max_minutes=10.0, milestones=(0.8,), total=1000, step=0):
    opt = SimpleNamespace(max_minutes=max_minutes, lr_milestones=list(milestones), lr=1.0, lr_warmup=0)
    t = SimpleNamespace(opt=opt, world=1, step=step, milestones=[int(f * total) for f in milestones])
    t.lr_factor = lambda s: Trainer.lr_factor(t, s)
    return t


def test_a_milestone_falls_by_the_clock_before_its_step():
    t = clocked(total=1000, step=120)
    assert not Trainer._clock(t, 7.9) and t.milestones == [800]
    t.step = 121
    assert not Trainer._clock(t, 8.0)  # 0.8 of 10 minutes passed at step 121: the lr drops from step 121 on
    assert t.milestones == [121]
    assert t.lr_factor(120) == 1.0 and abs(t.lr_factor(121) - 0.1) < 1e-12
    t.step = 300
    assert not Trainer._clock(t, 9.0) and t.milestones == [121]  # falls once
    assert Trainer._clock(t, 10.01)  # the minutes are over


def test_steps_first_keeps_the_step_milestone_and_no_clock_means_steps_only():
    t = clocked(total=100, step=90)
    assert not Trainer._clock(t, 8.5) and t.milestones == [80]  # the step milestone came first
    t = clocked(max_minutes=0, total=100, step=5)
    assert not Trainer._clock(t, 1e9) and t.milestones == [80]


def test_two_milestones_fall_in_order():
    t = clocked(milestones=(0.5, 0.9), total=10_000, step=40)
    Trainer._clock(t, 5.0)
    assert t.milestones == [40, 9000]
    t.step = 77
    Trainer._clock(t, 9.2)
    assert t.milestones == [40, 77] and abs(t.lr_factor(77) - 0.01) < 1e-12
