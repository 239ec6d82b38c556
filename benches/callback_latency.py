#!/usr/bin/env python3
"""Callback delivery latency: N executions (busybox true, wait) with an HMAC callback to a
receiver on loopback; from each callback's record: end -> sealed (ready), ready -> delivered.
Usage: benches/callback_latency.py target/release/sandpit ROOTFS [N]"""
import http.server, json, os, socket, subprocess, sys, tempfile, threading, time, urllib.request
from datetime import datetime

SANDPIT, ROOTFS, N = sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 100
got = []
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers['Content-Length'])); got.append(time.time())
        self.send_response(200); self.send_header('Content-Length', '0'); self.end_headers()
    def log_message(self, *a): pass
rx = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)
threading.Thread(target=rx.serve_forever, daemon=True).start()
port = rx.server_address[1]
data = tempfile.mkdtemp(prefix='cbbench')
env = dict(os.environ, SANDPIT_MASTER_TOKEN='t')
srv = subprocess.Popen([SANDPIT, '--data', data, 'serve', '--listen', '127.0.0.1:0', '--rootfs-env',
    f'busybox={ROOTFS}', '--callback-allow', f'127.0.0.1:{port}'], env=env, stdout=subprocess.PIPE, text=True)
addr = next(l for l in srv.stdout if 'listening on' in l).split('http://')[1].split()[0]
def call(method, path, body=None):
    req = urllib.request.Request(f'http://{addr}{path}', method=method, data=json.dumps(body).encode() if body else None,
        headers={'Authorization': 'Bearer t', 'Content-Type': 'application/json'})
    return json.load(urllib.request.urlopen(req))
ids = [call('POST', '/api/v1/executions', {'environment': 'busybox', 'command': ['true'], 'wait': True,
    'callback': {'url': f'http://127.0.0.1:{port}/h', 'secret': 'x' * 32}})['id'] for _ in range(N)]
while len(got) < N: time.sleep(0.05)
t = lambda s: datetime.fromisoformat(s.replace('Z', '+00:00')).timestamp()
seal, deliver = [], []
for i in ids:
    e = call('GET', f'/api/v1/executions/{i}?include_log=false')
    c = call('GET', f'/api/v1/executions/{i}/callbacks')['items'][0]
    seal.append((t(c['ready_date']) - t(e['end_date'])) * 1e3)
    deliver.append((t(c['delivered_date']) - t(c['ready_date'])) * 1e3)
srv.kill(); srv.wait(); rx.shutdown()
subprocess.run(['rm', '-rf', data])
med = lambda xs: sorted(xs)[len(xs) // 2]
p90 = lambda xs: sorted(xs)[int(len(xs) * 0.9)]
print(f'{N} callbacks: end -> sealed median {med(seal):.2f} ms (p90 {p90(seal):.2f}); sealed -> delivered median {med(deliver):.2f} ms (p90 {p90(deliver):.2f})')
