"The default's change (2026-12-02): the saved 'BalancedFinetune (cRT)' rows were BalancedFinetune() with the old default (reinit=True), i.e. the recipe now named 'BalancedFinetune(reinit=True) (cRT)'; the new default's rows come from the re-run"
import matplotlib; matplotlib.use('Agg')
from fastai_imbalance.bench import load_results, combine_results, save_results, method_settings, single_label_methods
import pandas as pd
order = list(method_settings)
for task, new, keep_crt in (('single', '/tmp/bench_bf_single', True), ('many', '/tmp/bench_bf_many', False)):
    old = load_results(f'bench/results/{task}')
    a = dict(old.attrs)
    if keep_crt: old = old.replace({'method': {'BalancedFinetune (cRT)': 'BalancedFinetune(reinit=True) (cRT)'}})
    else: old = old[old.method != 'BalancedFinetune (cRT)']
    old.attrs = a; old.attrs['settings'] = {m: method_settings.get(m, '') for m in old.method.unique()}
    res = combine_results(old, load_results(new))
    res = res.sort_values('method', key=lambda c: c.map(order.index), kind='stable').reset_index(drop=True)
    res.attrs = dict(res.attrs); res.attrs['settings'] = {m: method_settings.get(m, '') for m in res.method.unique()}
    save_results(res, f'bench/results/{task}')
    print(task, list(res.method.unique()), res.groupby('method', sort=False).size().tolist())
