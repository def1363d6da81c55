"fastai-imbalance-bench: folder checks, a small real run through the CLI code path, outputs."
import copy, json, re, shutil, subprocess, sys
import numpy as np, pandas as pd, pytest
from PIL import Image
from fastai_imbalance.bench import check_folder, run_bench, summarize, save_results, shot_thresholds, main
from conftest import tiny_arch


def make_folder(root, classes={'a': 3, 'b': 1}):
    for split in ('train', 'valid'):
        for c, n in classes.items():
            (root/split/c).mkdir(parents=True, exist_ok=True)
            for i in range(n): Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(root/split/c/f'{i}.png')
    return root


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='no such folder'): check_folder(tmp_path/'nope')
    (tmp_path/'x').mkdir()
    with pytest.raises(FileNotFoundError, match=re.escape('has no train/ folder')): check_folder(tmp_path/'x')
    f = make_folder(tmp_path/'y'); (f/'train'/'empty').mkdir()
    with pytest.raises(ValueError, match=re.escape("class folder(s) with no images in train/: ['empty']")): check_folder(f)
    g = make_folder(tmp_path/'z'); (g/'valid'/'c').mkdir(); shutil.copy(g/'valid'/'a'/'0.png', g/'valid'/'c'/'0.png')
    with pytest.raises(ValueError, match=re.escape("valid/ has classes that train/ lacks: ['c']")): check_folder(g)
    h = make_folder(tmp_path/'h'); (h/'train'/'a'/'broken.png').write_bytes(b'not an image')
    with pytest.warns(UserWarning, match=r"1 unreadable image\(s\) left out: \['.*broken.png'\]"): files = check_folder(h)
    assert len(files) == 8 and not any(f.name == 'broken.png' for f in files)


def test_shot_thresholds():
    assert shot_thresholds([5000, 3, 1]) == (100, 20) and shot_thresholds([100, 1]) == (50, 10)


def test_small_run_scores_and_outputs(lt_path, tmp_path):
    res = run_bench('single', str(lt_path), tiny_arch, epochs=1, bs=64, methods=['cross-entropy', 'LogitAdjustedLoss', 'ResampledDL balanced'])
    assert list(res.method) == ['cross-entropy', 'ResampledDL balanced', 'LogitAdjustedLoss', 'PriorShift(uniform) on cross-entropy']  # in recipe order
    for c in ('accuracy', 'balanced_accuracy', 'macro_f1', 'kappa', 'macro_auc', 'many_shot', 'medium_shot', 'few_shot', 'wall_s'):
        assert res[c].notna().all() and (res[c] >= -1).all(), c
    assert np.allclose(res.accuracy, res.balanced_accuracy, rtol=0, atol=1e-12)  # the digits' validation set is balanced (two float roundings)
    s = summarize(res)
    assert list(s.index) == list(res.method) and s.loc['cross-entropy', 'wall time'].endswith(' s')
    o = save_results(res, tmp_path/'out')
    j = json.loads((o/'results.json').read_text())
    assert len(j['runs']) == 4 and j['meta']['train_counts'][0] == 100
    assert pd.read_csv(o/'results.csv', index_col=0).shape[0] == 4 and (o/'class_counts.png').stat().st_size > 0 and (o/'recall_vs_frequency.png').exists()
    with pytest.raises(ValueError, match=re.escape("unknown method(s) ['SMOTE']")): run_bench('single', str(lt_path), tiny_arch, epochs=1, methods=['SMOTE'])
    with pytest.raises(ValueError, match="unknown task 'regression'"): run_bench('regression')


def test_rare_and_multilabel_tasks(tmp_path, ml_path):
    from fastai_imbalance.datasets import digits_rare
    r = run_bench('rare', str(digits_rare()), tiny_arch, epochs=1, bs=64, methods=['cross-entropy', 'PairwiseAUCLoss + CE'])
    assert list(r.method) == ['cross-entropy', 'PairwiseAUCLoss + CE'] and r['sens_at_spec_0.9'].between(0, 1).all() and r.auprc.between(0, 1).all()
    m = run_bench('multilabel', str(ml_path), tiny_arch, epochs=1, bs=64, methods=['BCE', 'BCE full pos_weight'])
    assert m.pred_over_true.iloc[1] > m.pred_over_true.iloc[0]  # the full pos_weight predicts more labels
    with pytest.raises(ValueError, match='--task rare needs two classes'): run_bench('rare', str(make_folder(tmp_path/'three', {'a': 2, 'b': 2, 'c': 2})), tiny_arch)


def test_bad_run_arguments():
    for kw, msg in ((dict(epochs=0), 'epochs must be a positive integer, got 0'), (dict(seeds=1.5), 'seeds must be a positive integer, got 1.5')):
        with pytest.raises(ValueError, match=re.escape(msg)): run_bench('single', **kw)


def test_shot_recall_from_the_confusion_matrix():
    import torch
    from fastai_imbalance.bench import score_single
    y = torch.tensor([0, 0, 1, 1, 2, 2, 2]); z = torch.eye(3)[[0, 1, 1, 1, 2, 0, 2]] * 4
    s = score_single(z, y, np.array([300, 50, 5]))
    assert s['recall'] == pytest.approx([.5, 1., 2 / 3]) and s['many_shot'] == .5 and s['medium_shot'] == 1. and s['few_shot'] == pytest.approx(2 / 3)


def test_same_arguments_same_scores(lt_path):
    import random
    kw = dict(arch=tiny_arch, epochs=1, bs=64, methods=['ResampledDL balanced'])
    a = run_bench('single', str(lt_path), **kw)
    random.random(); random.random()  # whatever state the caller left behind
    b = run_bench('single', str(lt_path), **kw)
    assert a.drop(columns=['wall_s']).equals(b.drop(columns=['wall_s']))


def test_a_job_alone_equals_the_same_job_in_the_suite(lt_path):
    "Seeds are paired: (method, seed) depends on the seed alone, not on the jobs run before it (fastai's loaders carry their `rng` forward)"
    kw = dict(arch=tiny_arch, epochs=1, bs=64, seeds=2)
    suite = run_bench('single', str(lt_path), methods=['cross-entropy', 'FocalLoss', 'ResampledDL balanced'], **kw)
    alone = run_bench('single', str(lt_path), methods=['ResampledDL balanced'], **kw)
    later = run_bench('single', str(lt_path), methods=['ResampledDL balanced'], arch=tiny_arch, epochs=1, bs=64, seeds=1, first_seed=1)
    pick = lambda r, m: r[r.method == m].drop(columns=['wall_s']).reset_index(drop=True)
    assert pick(suite, 'ResampledDL balanced').equals(pick(alone, 'ResampledDL balanced'))
    assert pick(alone, 'ResampledDL balanced').iloc[[1]].reset_index(drop=True).equals(pick(later, 'ResampledDL balanced'))


def test_combine_results_of_separate_invocations(lt_path, tmp_path):
    "Seeds added later and a method re-run after a change combine into the run they would have been; different setups are refused"
    from fastai_imbalance.bench import combine_results, load_results, bench_report
    kw = dict(arch=tiny_arch, epochs=1, bs=64, methods=['cross-entropy', 'LogitAdjustedLoss'])
    whole = run_bench('single', str(lt_path), seeds=2, **kw)
    first, second = run_bench('single', str(lt_path), seeds=1, **kw), run_bench('single', str(lt_path), seeds=1, first_seed=1, **kw)
    both = combine_results(load_results(save_results(first, tmp_path/'a')), second)
    drop = lambda r: r.drop(columns=['wall_s', 'recall']).reset_index(drop=True)
    assert drop(both).equals(drop(whole)) and both.attrs['seeds'] == 2 and both.attrs['first_seed'] == 0
    assert summarize(both).equals(summarize(whole).assign(**{'wall time': summarize(both)['wall time']}))
    assert 'seeds 0..1' in bench_report(save_results(both, tmp_path/'b'))
    redo = whole[whole.method == 'LogitAdjustedLoss'].copy(); redo['balanced_accuracy'] = 0.; redo.attrs = dict(whole.attrs)
    r = combine_results(whole, redo)
    assert list(r.method.unique()) == ['cross-entropy', 'LogitAdjustedLoss', 'PriorShift(uniform) on cross-entropy'] and len(r) == 6 and (r[r.method == 'LogitAdjustedLoss'].balanced_accuracy == 0).all()
    gap = combine_results(first, run_bench('single', str(lt_path), seeds=1, first_seed=3, **kw))
    assert 'seeds 0, 3' in bench_report(save_results(gap, tmp_path/'c'))
    other = run_bench('single', str(lt_path), seeds=1, arch=tiny_arch, epochs=2, bs=64, methods=['cross-entropy'])
    with pytest.raises(ValueError, match='epochs is 1 in the runs before and 2 in run 2'): combine_results(first, other)


def test_combine_refuses_what_cannot_be_paired_before_training(lt_path, tmp_path, monkeypatch):
    "add_to is checked before the first job; mixed recipes, other data, empty or unrecorded runs are refused; attrs are plain and not shared"
    import shutil, fastai_imbalance.bench as B
    from fastai_imbalance.bench import combine_results, load_results, bench_report
    kw = dict(arch=tiny_arch, epochs=1, bs=64, methods=['cross-entropy', 'LogitAdjustedLoss'])
    first = run_bench('single', str(lt_path), seeds=1, **kw)
    def no_training(*a, **k): raise AssertionError('trained before checking the setup')
    with monkeypatch.context() as m:
        m.setattr(B, '_train', no_training)
        with pytest.raises(ValueError, match='lr is 0.003 in the earlier runs and 0.01 in this run'):
            run_bench('single', str(lt_path), seeds=1, lr=1e-2, add_to=load_results(save_results(first, tmp_path/'a')), **kw)
    # the same method under another recipe: refused, naming it
    other = first.copy(); other.attrs = copy.deepcopy(first.attrs); other['seed'] = 1
    other.attrs['settings']['LogitAdjustedLoss'] = 'tau=2'
    with pytest.raises(ValueError, match="'LogitAdjustedLoss' ran with different settings"): combine_results(first, other)
    # other images under the same folder name, classes and counts: the data fingerprint differs
    moved = tmp_path/'copy'/lt_path.name; shutil.copytree(lt_path, moved)
    f = sorted((moved/'valid').rglob('*.png'))[0]; f.write_bytes(f.read_bytes() + b'\0')
    with monkeypatch.context() as m:
        m.setattr(B, '_train', no_training)
        with pytest.raises(ValueError, match='data_digest is'): run_bench('single', str(moved), seeds=1, add_to=first, **kw)
    # numpy and tuple attrs (a run built by hand, or read another way) compare equal to their JSON form
    np_run = first.copy(); np_run['seed'] = 2
    np_run.attrs = {**copy.deepcopy(first.attrs), 'train_counts': np.array(first.attrs['train_counts']), 'vocab': tuple(first.attrs['vocab']), 'lr': np.float64(first.attrs['lr'])}
    both = combine_results(first, np_run)
    both.attrs['vocab'].append('x'); assert 'x' not in first.attrs['vocab']  # the result's attrs are its own
    with pytest.raises(ValueError, match='hold no'): combine_results(first.iloc[:0], np_run.iloc[:0])
    bare = pd.DataFrame(dict(method=['cross-entropy'], seed=[5], balanced_accuracy=[.5]))
    with pytest.raises(ValueError, match='run 2 has no setup recorded'): combine_results(first, bare)
    # a method re-run at more seeds than the others: the report counts each method's seeds and says so
    more = run_bench('single', str(lt_path), seeds=1, first_seed=1, arch=tiny_arch, epochs=1, bs=64, methods=['cross-entropy'])
    mixed = combine_results(first, more)
    sm = B.summarize(mixed)
    assert list(sm['seeds']) == [2, 1, 2] and list(sm['paired seeds']) == ['', 1, 2]  # Δ over the seeds a method shares with cross-entropy
    rep = bench_report(save_results(mixed, tmp_path/'m'))
    assert 'Not every method ran every seed' in rep and '| seeds |' in rep
    # three runs: the third is checked against the second's fingerprint and settings too, even when the first predates them
    old = first.copy(); old.attrs = {k: v for k, v in copy.deepcopy(first.attrs).items() if k != 'data_digest'}
    b2 = first.copy(); b2['seed'] = 7; b2.attrs = copy.deepcopy(first.attrs)
    c3 = first.copy(); c3['seed'] = 8; c3.attrs = {**copy.deepcopy(first.attrs), 'data_digest': '0' * 16}
    with pytest.warns(UserWarning, match='predates the data fingerprint'), pytest.raises(ValueError, match='data_digest is'): combine_results(old, b2, c3)
    with pytest.warns(UserWarning, match='predates the data fingerprint'): assert combine_results(old, b2).attrs['data_digest'] == first.attrs['data_digest']
    # equal seed counts, different seed sets: still said
    shifted = first.copy(); shifted.attrs = copy.deepcopy(first.attrs)
    shifted.loc[shifted.method == 'LogitAdjustedLoss', 'seed'] = 4
    assert 'seeds' in B.summarize(shifted)
    # NaN scores are written as standard JSON (null) and read back as NaN
    nan = first.copy(); nan.attrs = copy.deepcopy(first.attrs); nan.loc[0, 'macro_f1'] = np.nan
    o = save_results(nan, tmp_path/'nan')
    assert 'NaN' not in (o/'results.json').read_text() and np.isnan(load_results(o).macro_f1.iloc[0])


def test_same_seed_same_first_epoch_order(lt_path):
    "Two methods that train on the same loader see the same batches at the same seed, whatever ran before"
    from fastai_imbalance.bench import load_task, seed_job
    _,_,dls = load_task('single', str(lt_path), bs=64)
    order = lambda: [int(i) for b in dls.train for i in b[1]]
    seed_job(3, dls); a = order(); list(dls.train)  # a second epoch moves fastai's rng on
    seed_job(3, dls); b = order()
    seed_job(4, dls); c = order()
    assert a == b and a != c


def test_paired_difference_and_verdicts():
    from fastai_imbalance.bench import paired_difference
    from scipy import stats
    ce = np.array([.70, .72, .69, .75, .71])
    res = pd.DataFrame(dict(method=['cross-entropy'] * 5 + ['A'] * 5 + ['B'] * 5 + ['C'] * 5, seed=list(range(5)) * 4,
                            balanced_accuracy=np.r_[ce, ce + [.05, .06, .04, .05, .07], ce + [.02, -.03, .01, -.01, .0], ce - [.04, .05, .03, .06, .05]]))
    p = paired_difference(res, 'balanced_accuracy', 'cross-entropy')
    assert list(p.verdict) == ['baseline', 'better', 'not distinguishable', 'worse']
    d = np.array([.02, -.03, .01, -.01, .0]); h = stats.t.ppf(.975, 4) * d.std(ddof=1) / np.sqrt(5)
    assert p.loc['B', 'diff'] == pytest.approx(d.mean()) and p.loc['B', 'high'] == pytest.approx(d.mean() + h)
    one = res[res.seed == 0]
    assert paired_difference(one).verdict.iloc[1] == '1 seed: no verdict'
    with pytest.raises(ValueError, match="no 'BCE' runs to pair with"): paired_difference(res, base='BCE')


def test_report_and_charts_from_saved_results(lt_path, tmp_path):
    from fastai_imbalance.bench import bench_report, load_results
    res = run_bench('single', str(lt_path), tiny_arch, epochs=1, bs=64, seeds=2, methods=['cross-entropy', 'LogitAdjustedLoss'])
    o = save_results(res, tmp_path/'r')
    for f in ('balanced_accuracy.png', 'shots.png', 'class_counts.png', 'recall_vs_frequency.png'): assert (o/f).stat().st_size > 1000, f
    back = load_results(o)
    assert back.drop(columns='recall').equals(res.drop(columns='recall')) and back.attrs['settings']['LogitAdjustedLoss'].startswith('Menon')
    md = bench_report(o, link='bench/results/x')
    lines = md.splitlines()
    assert '| method | balanced_accuracy |' in md and '![balanced_accuracy per method](bench/results/x/balanced_accuracy.png)' in md
    row = next(l for l in lines if l.startswith('| LogitAdjustedLoss |'))
    p = summarize(res).loc['LogitAdjustedLoss']
    assert p['Δ balanced_accuracy [95% CI]'] in row and p['verdict'] in row and '- **LogitAdjustedLoss**: Menon et al. 2021' in md
    assert '<' not in md.replace('<U+', '')  # Markdown only: no HTML
    one = run_bench('single', str(lt_path), tiny_arch, epochs=1, bs=64, seeds=1, methods=['cross-entropy'])
    assert 'verdict' not in summarize(one) and 'smoke test' in bench_report(save_results(one, tmp_path/'q'))


def test_weights_file_and_fine_tune(lt_path, tmp_path):
    "--weights: a local state dict loaded into the body, then fine_tune, with BalancedFinetune inside fine_tune's unfrozen fit"
    import torch
    from torchvision.models import resnet18
    from fastai.vision.all import vision_learner
    from fastai_imbalance.bench import load_body, load_task
    m = resnet18(); torch.save(m.state_dict(), tmp_path/'r18.pth')
    _,_,dls = load_task('single', str(lt_path), bs=64)
    learn = vision_learner(dls, resnet18, pretrained=False)
    load_body(learn, resnet18, tmp_path/'r18.pth')
    assert torch.equal(learn.model[0][0].weight, m.conv1.weight) and torch.equal(learn.model[0][4][0].bn1.running_mean, m.layer1[0].bn1.running_mean)
    for i, wrapped in enumerate(({'state_dict': m.state_dict(), 'epoch': 3}, {'model': {'module.' + k: v for k, v in m.state_dict().items()}})):  # checkpoint layouts
        l2 = vision_learner(dls, resnet18, pretrained=False); torch.save(wrapped, tmp_path/f'w{i}.pth')
        load_body(l2, resnet18, tmp_path/f'w{i}.pth'); assert torch.equal(l2.model[0][0].weight, m.conv1.weight)
    import argparse
    ck = {'model': {'model.' + k: v for k, v in m.state_dict().items()}, 'args': argparse.Namespace(lr=0.1)}  # a reference-script checkpoint: refused, with the way out
    torch.save(ck, tmp_path/'ns.pth')
    with pytest.raises(ValueError, match=r"ns.pth holds Python objects beside its tensors \(.*Unsupported global: GLOBAL argparse.Namespace.*save the model's state dict alone"): load_body(learn, resnet18, tmp_path/'ns.pth')
    torch.save({'state_dict': ck['model'], 'epoch': 1}, tmp_path/'pl.pth')  # a Lightning module's self.model
    l3 = vision_learner(dls, resnet18, pretrained=False); load_body(l3, resnet18, tmp_path/'pl.pth'); assert torch.equal(l3.model[0][0].weight, m.conv1.weight)
    (tmp_path/'text.pth').write_text('not weights'); (tmp_path/'empty.pth').write_bytes(b'')
    for f in ('text.pth', 'empty.pth'):
        with pytest.raises(ValueError, match=f'{f} is not a torch weights file'): load_body(learn, resnet18, tmp_path/f)
    from torch import nn
    class Wrap(nn.Module):  # an architecture whose own keys all start with 'model.': nothing stripped
        def __init__(self, pretrained=False): super().__init__(); self.model = nn.Sequential(nn.Conv2d(3, 4, 3)); self.pool = nn.AdaptiveAvgPool2d(1)
        def forward(self, x): return self.pool(self.model(x))
    w = Wrap(); torch.save(w.state_dict(), tmp_path/'wrap.pth')
    lw = vision_learner(dls, Wrap, pretrained=False); load_body(lw, Wrap, tmp_path/'wrap.pth')
    assert torch.equal(lw.model[0][0][0].weight, w.model[0].weight)
    torch.save({'fc.weight': torch.zeros(3)}, tmp_path/'bad.pth')
    with pytest.raises(ValueError, match="bad.pth does not hold resnet18's weights"): load_body(learn, resnet18, tmp_path/'bad.pth')
    import warnings
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        r = run_bench('single', str(lt_path), resnet18, epochs=3, bs=64, methods=['BalancedFinetune()'], weights=str(tmp_path/'r18.pth'))
    assert not [x for x in w if 'BalancedFinetune' in str(x.message)], [str(x.message) for x in w]  # the stage ran inside fine_tune's unfrozen fit of 2 epochs
    assert r.attrs['recipe'].startswith('fine_tune') and re.fullmatch(r'local weights file r18.pth, sha256 [0-9a-f]{12}', r.attrs['pretrained'])
    with pytest.raises(ValueError, match='epochs must be >= 2'): run_bench('single', str(lt_path), resnet18, epochs=1, weights=str(tmp_path/'r18.pth'))
    with pytest.raises(FileNotFoundError, match='no weights file'): run_bench('single', str(lt_path), resnet18, weights=str(tmp_path/'none.pth'))


def test_pretrained_normalisation_is_the_architecture_s(lt_path):
    "vision_learner(pretrained=True)'s Normalize, added once before any recipe derives loaders: a timm ViT's 0.5 stats, not ImageNet's"
    import torch
    from torchvision.models import resnet18
    from fastai.vision.all import Normalize
    from fastai_imbalance.bench import load_task, _add_arch_norm
    for arch, mean in (('vit_small_patch16_224', .5), (resnet18, .485)):
        _,_,dls = load_task('single', str(lt_path), bs=64)
        _add_arch_norm(dls, arch); _add_arch_norm(dls, arch)
        norms = [t for t in dls.after_batch.fs if isinstance(t, Normalize)]
        assert len(norms) == 1 and float(norms[0].mean.flatten()[0]) == pytest.approx(mean), arch
    with pytest.raises(ValueError, match="no pretrained configuration for 'not_a_model'"): _add_arch_norm(dls, 'not_a_model')


def test_method_selection_errors(lt_path):
    with pytest.raises(ValueError, match="add 'cross-entropy' to the methods"): run_bench('single', str(lt_path), tiny_arch, epochs=1, methods=['PriorShift(uniform) on cross-entropy', 'FocalLoss'])
    with pytest.raises(ValueError, match=re.escape("unknown method(s) ['Focal']")): run_bench('single', str(lt_path), tiny_arch, epochs=1, methods='FocalLoss,Focal')


def test_cli_help_prints_no_warning():
    "fastai's import-time `torch.jit.script` deprecation is not the user's to act on: the command line stays quiet"
    import os, subprocess, sys
    from pathlib import Path
    cli = shutil.which('fastai-imbalance-bench', path=str(Path(sys.executable).parent))  # the installed console script, as a user runs it
    assert cli, 'the console script is declared in settings.ini and installed by pip install -e .'
    r = subprocess.run([cli, '--help'], capture_output=True, text=True, timeout=120, env={k: v for k,v in os.environ.items() if k != 'PYTHONWARNINGS'})  # Python's default filters, as a user's shell has
    assert r.returncode == 0 and 'usage: fastai-imbalance-bench' in r.stdout and '--quick' in r.stdout and '--data' in r.stdout
    assert 'Warning' not in r.stderr, r.stderr
