import json, statistics as st, sys
R = sys.argv[1]
def ours(policy):
    out={}
    for p in (1,2):
        d=json.load(open(f'{R}/after_{p}/e2e_cpu-vllm.json'))
        for r in d['rows']:
            if r['policy']!=policy: continue
            o=out.setdefault(r['batch'],{'pre':[],'tps':[]})
            o['pre']+= [v/1e3 for v in r['metrics']['prefill_ms']['values']]
            o['tps']+= r['metrics']['tokens_per_s']['values']
    return out
def vllm():
    out={}
    for p in (1,2):
        for c in json.load(open(f'{R}/vllm_{p}.json'))['calls']:
            o=out.setdefault(c['batch'],{'pre':[],'tps':[]})
            o['pre'].append(c['prefill_s']); o['tps'].append(c['decode_tok_s'])
    return out
def f(v): return f"{st.median(v):.2f} [{min(v):.2f}, {max(v):.2f}]"
V=vllm(); A=ours('dense'); S=ours('schedule:3:0.75')
print("| batch | vLLM-CPU prefill s | Dense prefill s (vs vLLM) | vLLM decode tok/s | Dense decode tok/s (vs vLLM) | Schedule(0.75) prefill s / decode tok/s |")
print("|---|---|---|---|---|---|")
for b in (1,8,16):
    v,a,s=V[b],A[b],S[b]
    print(f"| {b} | {f(v['pre'])} | {f(a['pre'])} ({st.median(v['pre'])/st.median(a['pre']):.2f}x) | {f(v['tps'])} | {f(a['tps'])} ({st.median(a['tps'])/st.median(v['tps']):.2f}x) | {st.median(s['pre']):.2f} / {st.median(s['tps']):.1f} |")
