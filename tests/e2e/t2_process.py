"""A real `t2 serve` on 127.0.0.1 and a free port, for the Python end-to-end
tests: started, ready once it prints "t2 ready", its output drained on a thread
so that its logs never block it, and stopped with SIGTERM (it drains and exits).
"""
import re
import signal
import subprocess
import threading


class T2Server:
    def __init__(self, t2, args):
        self.process = subprocess.Popen([t2, "serve", "--host", "127.0.0.1", "--port", "0", *args],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.port, ready, seen = None, False, []
        for line in self.process.stdout:
            seen.append(line)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
            if "t2 ready" in line:
                ready = True
                break
        if self.port is None or not ready:
            self.process.wait(timeout=60)
            raise RuntimeError("t2 serve did not start:\n" + "".join(seen))
        self.drain = threading.Thread(target=lambda: self.process.stdout.read(), daemon=True)
        self.drain.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        self.drain.join(timeout=10)
