"""Child process for the kill -9 resume tests: runs the loader, logs every consumed step, saves state.

argv: data state_path log_path die_at [backend]. ``die_at`` is "E:S" (SIGKILL itself right after saving
the state of consumed step S of epoch E), "E:boundary" (after set_epoch(E+1), before its first batch),
or "none". Each log line: epoch step ids aug_magnitude image_sha256.
"""
import hashlib
import json
import os
import signal
import sys

from vitdata import LoaderConfig, create_loader
from vitdata.io import atomic_write
from vitdata.loader.config import ScheduleConfig

EPOCHS = 2


def main():
    data, state_path, log_path, die_at = sys.argv[1:5]
    backend = sys.argv[5] if len(sys.argv) > 5 else "dali"
    cfg = LoaderConfig(data=data, batch_size=8, image_size=24, backend=backend, num_workers=1 if backend == "dali" else 0,
                       prefetch=2,
                       schedule=ScheduleConfig(name="linear", epochs=EPOCHS, kwargs=dict(magnitude=(2.0, 9.0), per="step")))
    loader = create_loader(cfg)
    if os.path.exists(state_path):
        with open(state_path) as f:
            loader.load_state_dict(json.load(f))
    log = open(log_path, "a")

    def save():
        atomic_write(state_path, json.dumps(loader.state_dict()).encode())

    def die(tag):
        if die_at == tag:
            import psutil   # leave the ids of our DALI workers for the test to reap (they outlive a SIGKILL)

            with open(log_path + ".pids", "a") as f:
                f.write("".join(f"{c.pid}\n" for c in psutil.Process().children(recursive=True)))
            os.kill(os.getpid(), signal.SIGKILL)

    start = loader.epoch + (loader.position == len(loader))   # a restored epoch that was finished: the next one
    for epoch in range(start, EPOCHS):
        loader.set_epoch(epoch)
        if epoch > 0:
            save()
            die(f"{epoch - 1}:boundary")
        for b in loader:
            step = loader.position - 1
            digest = hashlib.sha256(b.images.numpy().tobytes()).hexdigest()[:16]
            log.write(json.dumps([epoch, step, b.ids.tolist(), [round(float(x), 4) for x in b.aug_magnitude], digest])
                      + "\n")
            log.flush()
            os.fsync(log.fileno())
            save()
            die(f"{epoch}:{step}")
    log.close()
    loader.close()


if __name__ == "__main__":
    main()
