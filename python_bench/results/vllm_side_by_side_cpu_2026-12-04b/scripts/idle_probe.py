import os, subprocess, sys, time, json
HZ = os.sysconf("SC_CLK_TCK")
def tree(pid):
    kids = {pid}
    changed = True
    while changed:
        changed = False
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    ppid = int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1])
                except Exception: continue
                if ppid in kids and int(p) not in kids: kids.add(int(p)); changed = True
    return kids
def cpu(pids):
    t = 0
    for p in pids:
        for task in os.listdir(f"/proc/{p}/task") if os.path.exists(f"/proc/{p}/task") else []:
            try:
                f = open(f"/proc/{p}/task/{task}/stat").read().rsplit(")", 1)[1].split()
                t += int(f[11]) + int(f[12])
            except Exception: pass
    return t / HZ
which = sys.argv[1]
if which == "vllm":
    argv = ["/work/vllm_env_new/venv/bin/python", "/work/main/python_bench/vllm_cpu/run_vllm.py", "--stdin", "--model", "/work/vllm_env_new/ckpt", "--rounds", "0", "--out", "/tmp/s9/pv.json", "--batch", "1", "--new-tokens", "64"]
else:
    argv = ["/work/main/.venv/bin/python", "/work/main/python_bench/vllm_cpu/run_engine.py", "--out", "/tmp/s9/pe.json", "--batch", "1", "--new-tokens", "64"]
p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(f"/tmp/s9/{which}.log", "w"), text=True, cwd="/work/main")
for line in p.stdout:
    if line.startswith("READY"): break
time.sleep(3)
pids = tree(p.pid)
for k in range(3):
    c0 = cpu(pids); time.sleep(1); print("idle before call, cpu s/s:", round(cpu(pids) - c0, 3))
    p.stdin.write("1\n"); p.stdin.flush()
    for line in p.stdout:
        if line.startswith("CALL"): print(line.strip()[:120]); break
    pids = tree(p.pid)
    prev = cpu(pids); t0 = time.perf_counter()
    out = []
    for i in range(30):
        time.sleep(0.1); c = cpu(pids); out.append(round((c - prev) / 0.1, 2)); prev = c
    print("after call, cores busy per 100 ms:", out)
p.stdin.close(); p.wait()
