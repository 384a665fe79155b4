"""A demo stage: one command whose complete output is a file or a folder, cached by the command that wrote it."""

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..io_utils import atomic_write_json


@dataclass
class Stage:
    """One step of the demo: a command whose complete output is `output` (a file or a folder)."""

    name: str
    command: list[str]
    output: Path
    env: dict = field(default_factory=dict)
    workdir: Path | None = None  # cleared before a re-run (defaults to `output` when it is a folder)

    def record_path(self, out: Path) -> Path:
        return out / "stages" / f"{self.name}.json"

    def is_cached(self, out: Path) -> bool:
        record = self.record_path(out)
        if not record.exists() or not self.output.exists():
            return False
        return json.loads(record.read_text()).get("command") == self.command

    def printable(self) -> str:
        """The command as a shell runs it, its environment settings first."""
        settings = [f"{key}={shlex.quote(value)}" for key, value in self.env.items()]
        return " ".join([*settings, shlex.join(self.command)])

    def run(self, out: Path, force: bool = False) -> bool:
        """Run the stage unless its output is cached; returns whether it ran."""
        if self.is_cached(out) and not force:
            print(f"[demo] {self.name}: cached ({self.output})", flush=True)
            return False
        print(f"\n[demo] {self.name}: {self.printable()}", flush=True)
        stale = self.workdir or self.output
        if stale.is_dir():
            shutil.rmtree(stale)  # left by a different command or an interrupted run: rebuild it
        start = time.perf_counter()
        log_path = out / "logs" / f"{self.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        returncode = self._stream(log_path)
        if returncode != 0:
            raise RuntimeError(f"stage {self.name} failed (exit {returncode}); its log: {log_path}")
        if not self.output.exists():
            raise RuntimeError(f"stage {self.name} finished but wrote no {self.output}")
        seconds = time.perf_counter() - start
        atomic_write_json(
            self.record_path(out), {"command": self.command, "output": str(self.output), "seconds": round(seconds, 1)}
        )
        print(f"[demo] {self.name}: done in {seconds:.0f} s", flush=True)
        return True

    def _stream(self, log_path: Path) -> int:
        """Run the command, streaming its output to the terminal and keeping a copy in `log_path`."""
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                self.command,
                env={**os.environ, **self.env},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for line in process.stdout:
                sys.stdout.write(f"  | {line}")
                sys.stdout.flush()
                log.write(line)
            return process.wait()


def llama_cpp_available() -> bool:
    """Whether llama-cpp-python is installed (the optional quantization stage needs it)."""
    return importlib.util.find_spec("llama_cpp") is not None


def shishu(*args: str) -> list[str]:
    """The `shishu` command of this interpreter (works without the console script on PATH)."""
    return [sys.executable, "-m", "modeling_shishu.cli", *args]


# Two processes in one gloo process group, one thread each (they share the cores). `--multi_gpu` with
# ACCELERATE_USE_CPU=1 starts one process per rank on the CPU; `--cpu` would start only one.
CPU_DDP_ENV = {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}


def accelerate_launch(port: int, *args: str) -> list[str]:
    """`accelerate launch` of this interpreter, two processes (run with `CPU_DDP_ENV` on the CPU)."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    return [*launch, "--num_machines", "1", "--mixed_precision", "no", "--main_process_port", str(port), *args]
