# A predictor's mean kept-visual trajectory on an eval set, as a `schedule:K:R0,R1,...` spec
# (the rate of step t is 1 - kept_t / visual), to replay on a bench preset whose head count the
# predictor was not trained for. argv: results.json, label, K.
import json, sys
report = json.load(open(sys.argv[1]))
row = next(r for r in report["policies"] if r["label"] == sys.argv[2])
rates = [round(1 - k / row["mean_visual"], 3) for k in row["kept_visual_by_step"]]
while len(rates) > 1 and rates[-1] == rates[-2]:
    rates.pop()
print(f"schedule:{sys.argv[3]}:" + ",".join(f"{r:g}" for r in rates))
