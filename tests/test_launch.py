"The documented launch command of 'Training on several GPUs', run on two CPU processes: torchrun + examples/train_distributed.py."
import os, re, subprocess, sys
from pathlib import Path
import pytest

from test_distributed import _free_port

ROOT = Path(__file__).resolve().parents[1]


def test_torchrun_two_processes(tmp_path):
    torchrun = Path(sys.executable).parent/'torchrun'
    if not torchrun.exists(): pytest.skip('torchrun not installed next to this python')
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}
    # the documented command plus torchrun's own per-rank stdout files: two ranks printing to one pipe interleave their lines
    # (and a free port: the default 29500 may be taken on a shared machine)
    cmd = [str(torchrun), '--nproc_per_node', '2', '--master-port', str(_free_port()), '--log-dir', str(tmp_path/'logs'), '--redirects', '1',
           str(ROOT/'examples'/'train_distributed.py'), '--epochs', '4', '--out', str(tmp_path/'out')]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    logs = sorted((tmp_path/'logs').rglob('stdout.log'), key=lambda p: int(p.parent.name))
    assert len(logs) == 2, logs
    lines = [l for p in logs for l in p.read_text().splitlines() if l.startswith('rank ')]
    assert [l.split(':')[0] for l in lines] == ['rank 0 of 2', 'rank 1 of 2'], [p.read_text()[-2000:] for p in logs]
    vals = [re.findall(r'(\w+) ([\d.]+)', l.split(':', 1)[1]) for l in lines]
    assert vals[0] == vals[1] and len(vals[0]) == 4  # every rank reports the whole validation set's metrics
    assert [p.name for p in (tmp_path/'out').iterdir()] == ['model.pkl']
    from fastai.learner import load_learner
    learn = load_learner(tmp_path/'out'/'model.pkl')
    from fastai_imbalance.datasets import digits_lt
    pred, idx, probs = learn.predict(sorted((digits_lt()/'valid'/'3').glob('*.png'))[0])
    assert pred in learn.dls.vocab and abs(float(probs.sum()) - 1) < 1e-5
