#!/usr/bin/env python3
# Copyright dmareg authors.
# SPDX-License-Identifier: Apache-2.0
"""Turns one job of a GitHub Actions workflow into a runner script.

Part of scripts/vm/ci-recipe-test: the workflow file is the single source of
truth, so its steps are read here, not copied. Strict: a key, an action or an
expression this runner cannot reproduce is an error, never ignored.

usage: ci-recipe-steps.py WORKFLOW OUTDIR WORKSPACE [--job NAME]
                          [--matrix NAME=VALUE]... [--set NAME=VALUE]...
Writes OUTDIR/runner.sh and OUTDIR/step-N.sh (run inside the job's root) and
prints the job's container image on stdout.
"""
import argparse
import os
import re
import shlex
import sys

import yaml

JOB_KEYS = {"name", "runs-on", "container", "timeout-minutes", "strategy", "env", "steps", "defaults"}
STEP_KEYS = {"name", "run", "uses", "with", "if", "working-directory", "env", "shell"}
SHELLS = {
    None: "bash -e {0}",  # the runner's default where bash exists
    "bash": "bash --noprofile --norc -eo pipefail {0}",
    "sh": "sh -e {0}",
}
EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def fail(msg):
    sys.exit(f"ci-recipe-steps: {msg}")


def expand(value, matrix, where):
    def one(m):
        expr = m.group(1)
        mm = re.fullmatch(r"matrix\.([A-Za-z0-9_-]+)", expr)
        if not mm or mm.group(1) not in matrix:
            fail(f"{where}: expression ${{{{ {expr} }}}} is not supported (only matrix values)")
        return str(matrix[mm.group(1)])

    return EXPR.sub(one, str(value))


def env_map(env, matrix, where):
    if env is None:
        return {}
    if not isinstance(env, dict):
        fail(f"{where}: env must be a mapping")
    return {str(k): expand("" if v is None else v, matrix, f"{where}: env {k}") for k, v in env.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("workflow")
    ap.add_argument("outdir")
    ap.add_argument("workspace")
    ap.add_argument("--job")
    ap.add_argument("--matrix", action="append", default=[])
    ap.add_argument("--set", action="append", default=[], dest="sets")
    a = ap.parse_args()

    with open(a.workflow) as f:
        wf = yaml.safe_load(f)
    jobs = wf.get("jobs") if isinstance(wf, dict) else None
    if not isinstance(jobs, dict) or not jobs:
        fail(f"{a.workflow}: no jobs")
    if a.job is None and len(jobs) != 1:
        fail(f"{a.workflow}: {len(jobs)} jobs; name one with --job")
    name = a.job or next(iter(jobs))
    job = jobs.get(name)
    if not isinstance(job, dict):
        fail(f"{a.workflow}: no job {name}")
    extra = set(job) - JOB_KEYS
    if extra:
        fail(f"job {name}: unsupported keys {sorted(extra)}")
    image = job.get("container")
    if isinstance(image, dict):
        if set(image) - {"image"}:
            fail(f"job {name}: container options {sorted(set(image) - {'image'})} are not reproduced here")
        image = image.get("image")
    if not isinstance(image, str):
        fail(f"job {name}: no container image")

    # The matrix: the first value of each variable unless --matrix picks one.
    matrix = {}
    for k, v in ((job.get("strategy") or {}).get("matrix") or {}).items():
        if not isinstance(v, list) or not v:
            fail(f"job {name}: matrix {k} must be a non-empty list ({k!r} with include/exclude is not supported)")
        matrix[k] = v[0]
    for kv in a.matrix:
        k, _, v = kv.partition("=")
        if k not in matrix:
            fail(f"--matrix {k}: the job has no matrix variable {k} (has: {' '.join(matrix) or 'none'})")
        matrix[k] = v

    jobenv = env_map(job.get("env"), matrix, f"job {name}")
    for kv in a.sets:
        k, eq, v = kv.partition("=")
        if not eq or k not in jobenv:
            fail(f"--set {kv}: the job's env has no {k}")
        jobenv[k] = v

    shell_default = ((job.get("defaults") or {}).get("run") or {}).get("shell")
    steps = job.get("steps")
    if not isinstance(steps, list) or not steps:
        fail(f"job {name}: no steps")

    ws = a.workspace
    lines = []
    for n, st in enumerate(steps, 1):
        where = f"step {n}"
        if not isinstance(st, dict):
            fail(f"{where}: not a mapping")
        extra = set(st) - STEP_KEYS
        if extra:
            fail(f"{where}: unsupported keys {sorted(extra)}")
        cond = st.get("if")
        if cond not in (None, "always()", "${{ always() }}", "success()", "failure()"):
            fail(f"{where}: if: {cond} is not supported")
        cond = {None: "success", "success()": "success", "failure()": "failure"}.get(cond, "always")
        title = expand(st.get("name") or st.get("run") or st.get("uses"), matrix, where).splitlines()[0]
        wd = os.path.join(ws, expand(st.get("working-directory") or ".", matrix, where))
        env = dict(jobenv)
        env.update(env_map(st.get("env"), matrix, where))
        head = ["run_step", str(n), shlex.quote(title), cond, shlex.quote(os.path.normpath(wd))]
        if "run" in st:
            if "uses" in st or "with" in st:
                fail(f"{where}: run together with uses/with")
            shell = st.get("shell", shell_default)
            if shell not in SHELLS:
                fail(f"{where}: shell {shell} is not supported")
            script = f"step-{n}.sh"
            with open(os.path.join(a.outdir, script), "w") as f:
                f.write(expand(st["run"], matrix, where))
            cmd = SHELLS[shell].format(f"/ci/{script}")
            lines.append(" ".join(head + [shlex.quote(cmd)] + [shlex.quote(f"{k}={v}") for k, v in env.items()]))
        elif "uses" in st:
            uses = st["uses"]
            with_ = st.get("with") or {}
            if re.fullmatch(r"actions/checkout@v\d+", uses):
                if with_:
                    fail(f"{where}: checkout options {sorted(with_)} are not reproduced here")
                lines.append(" ".join(head + ["checkout"]))
            elif re.fullmatch(r"actions/upload-artifact@v\d+", uses):
                if set(with_) - {"name", "path"} or "path" not in with_:
                    fail(f"{where}: upload-artifact needs path (and name) only here")
                art = expand(with_.get("name", "artifact"), matrix, where)
                path = expand(with_["path"], matrix, where)
                if "\n" in path.strip():
                    fail(f"{where}: one path only")
                lines.append(" ".join(head + ["upload", shlex.quote(art), shlex.quote(path.strip())]))
            else:
                fail(f"{where}: action {uses} is not reproduced here")
        else:
            fail(f"{where}: neither run nor uses")

    with open(os.path.join(a.outdir, "steps"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(a.outdir, "matrix"), "w") as f:
        f.write(" ".join(f"{k}={v}" for k, v in matrix.items()) + "\n")
    print(image)


if __name__ == "__main__":
    main()
