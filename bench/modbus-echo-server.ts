/**
 * A minimal Modbus TCP server that answers at once, for the benchmark baseline: modbus-serial's ServerTCP
 * defers every request with setTimeout(0) (≈1 ms floor), which would hide the filter's cost under the
 * server's. Answers Read Holding/Input Registers (3/4) with zeros of the quantity asked, echoes Write
 * Single Register (6), and answers anything else with exception 01. No policy, no checks beyond framing:
 * it is a load sink, not a device model.
 *
 *   node bench/modbus-echo-server.ts [--host 0.0.0.0] [--port 502 [--port 5020 …]]
 *
 * Prints `{"listening":[ports…]}` once every port is bound.
 */
import net from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    host: { type: 'string', default: '0.0.0.0' },
    port: { type: 'string', multiple: true, default: ['502'] },
  },
});

/** MBAP header (6) + unit id; a frame is 6 + length bytes (Modbus TCP §3.1.3). */
const MBAP = 6;

function answer(req: Buffer): Buffer {
  const fn = req[7] ?? 0;
  if ((fn === 3 || fn === 4) && req.length >= 12) {
    const qty = Math.min(req.readUInt16BE(10), 125);
    const out = Buffer.alloc(9 + qty * 2);
    req.copy(out, 0, 0, 4); // transaction id, protocol id
    out.writeUInt16BE(3 + qty * 2, 4);
    out[6] = req[6] ?? 0;
    out[7] = fn;
    out[8] = qty * 2;
    return out;
  }
  if (fn === 6 && req.length === 12) return Buffer.from(req);
  const out = Buffer.alloc(9);
  req.copy(out, 0, 0, 4);
  out.writeUInt16BE(3, 4);
  out[6] = req[6] ?? 0;
  out[7] = (fn | 0x80) & 0xff;
  out[8] = 0x01;
  return out;
}

function serve(socket: net.Socket): void {
  socket.setNoDelay(true);
  socket.on('error', () => {});
  let pending: Buffer = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    let buf = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    const replies: Buffer[] = [];
    while (buf.length >= MBAP) {
      const total = MBAP + buf.readUInt16BE(4);
      if (total > 260 || total < MBAP + 2) {
        socket.destroy();
        return;
      }
      if (buf.length < total) break;
      replies.push(answer(buf.subarray(0, total)));
      buf = buf.subarray(total);
    }
    pending = buf.length === 0 ? Buffer.alloc(0) : Buffer.from(buf);
    if (replies.length === 1) socket.write(replies[0] as Buffer);
    else if (replies.length > 1) socket.write(Buffer.concat(replies));
  });
}

const ports = values.port.map(Number);
await Promise.all(
  ports.map(
    (port) =>
      new Promise<void>((resolve, reject) => {
        const server = net.createServer(serve);
        server.once('error', reject);
        server.listen({ host: values.host, port, backlog: 2048 }, resolve);
      }),
  ),
);
process.stdout.write(JSON.stringify({ listening: ports }) + '\n');
process.on('SIGTERM', () => process.exit(0));
