import { appendFileSync, mkdtempSync, renameSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { formatLogPrefix } from '../policies/compile.ts';
import { SluiceError } from '../policies/errors.ts';
import {
  JsonLineFollower,
  MAX_ULOGD_LINE,
  findUlogdPluginDir,
  parseUlogdLine,
  toBlockedEvent,
  ulogdConfig,
  type UlogdRecord,
} from './ulogd.ts';

// Real lines written by ulogd 2.0.8 (Debian 12) for an nft `log group` rule in the output hook.
const TCP4 =
  '{"timestamp": "2026-11-21T23:07:25.900070", "dvc": "Netfilter", "raw.pktlen": 60, "raw.pktcount": 1, "oob.prefix": "sluice:drop:hmi-to-plc:no-flow:", "oob.time.sec": 1795302445, "oob.time.usec": 900070, "oob.mark": 0, "oob.ifindex_out": 1, "oob.hook": 3, "oob.family": 2, "oob.protocol": 2048, "oob.uid": 0, "oob.gid": 0, "raw.label": 0, "ip.protocol": 6, "ip.tos": 0, "ip.ttl": 64, "ip.totlen": 60, "ip.ihl": 5, "ip.csum": 4310, "ip.id": 11235, "ip.fragoff": 16384, "src_port": 45338, "dest_port": 502, "tcp.seq": 2692913928, "tcp.ackseq": 0, "tcp.window": 65495, "tcp.offset": 0, "tcp.reserved": 0, "tcp.urg": 0, "tcp.ack": 0, "tcp.psh": 0, "tcp.rst": 0, "tcp.syn": 1, "tcp.fin": 0, "tcp.res1": 0, "tcp.res2": 0, "tcp.csum": 65073, "oob.in": "", "oob.out": "lo", "src_ip": "127.0.0.1", "dest_ip": "127.0.0.2"}';
const UDP6 =
  '{"timestamp": "2026-11-21T23:09:46.646649", "dvc": "Netfilter", "raw.pktlen": 50, "raw.pktcount": 1, "oob.prefix": "sluice:would-drop::no-conduit:", "oob.time.sec": 1795302586, "oob.time.usec": 646649, "oob.mark": 0, "oob.ifindex_out": 1, "oob.hook": 3, "oob.family": 10, "oob.protocol": 34525, "oob.uid": 0, "oob.gid": 0, "raw.label": 0, "ip.protocol": 17, "ip6.payloadlen": 10, "ip6.priority": 0, "ip6.flowlabel": 320010, "ip6.hoplimit": 64, "ip6.nexthdr": 17, "src_port": 57395, "dest_port": 99, "udp.len": 10, "udp.csum": 29, "oob.in": "", "oob.out": "lo", "src_ip": "::1", "dest_ip": "::1"}';

function line(fields: Record<string, unknown>): string {
  return JSON.stringify({
    'oob.prefix': 'sluice:drop:c1:no-flow:',
    'oob.time.sec': 1_700_000_000,
    'oob.time.usec': 5000,
    'ip.protocol': 1,
    src_ip: '10.1.0.1',
    dest_ip: '10.2.0.1',
    ...fields,
  });
}

describe('ulogdConfig', () => {
  it('writes the NFLOG → JSON stack with the group, file and plugin paths', () => {
    const conf = ulogdConfig({ group: 42, jsonFile: '/run/sluice/drops.json', pluginDir: '/opt/ulogd' });
    expect(conf).toContain('stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,json1:JSON');
    expect(conf).toMatch(/\[log1\]\ngroup=42\n/);
    expect(conf).toMatch(/\[json1\]\nsync=1\nfile="\/run\/sluice\/drops\.json"\n/);
    expect(conf).toContain('plugin="/opt/ulogd/ulogd_output_JSON.so"');
    expect(conf).toContain('plugin="/opt/ulogd/ulogd_inppkt_NFLOG.so"');
    expect(conf).toContain('logfile="stdout"');
  });

  it('refuses values that could break out of the configuration syntax', () => {
    expect(() => ulogdConfig({ group: -1, jsonFile: '/x.json', pluginDir: '/p' })).toThrow(SluiceError);
    expect(() => ulogdConfig({ group: 65536, jsonFile: '/x.json', pluginDir: '/p' })).toThrow(/group/);
    expect(() => ulogdConfig({ group: 1.5, jsonFile: '/x.json', pluginDir: '/p' })).toThrow(/group/);
    expect(() => ulogdConfig({ group: 1, jsonFile: 'rel.json', pluginDir: '/p' })).toThrow(/absolute/);
    expect(() => ulogdConfig({ group: 1, jsonFile: '/a"\nplugin="/evil.so', pluginDir: '/p' })).toThrow(
      /quotes/,
    );
    expect(() => ulogdConfig({ group: 1, jsonFile: '/x.json', pluginDir: '/p', logFile: 'x"' })).toThrow();
  });

  it('finds the plugin directory for the running architecture, then other layouts', () => {
    const has = (dirs: string[]) => (p: string) => dirs.some((d) => p === `${d}/ulogd_output_JSON.so`);
    expect(findUlogdPluginDir('arm64', has(['/usr/lib/aarch64-linux-gnu/ulogd']), () => [])).toBe(
      '/usr/lib/aarch64-linux-gnu/ulogd',
    );
    expect(findUlogdPluginDir('x64', has(['/usr/lib/x86_64-linux-gnu/ulogd']), () => [])).toBe(
      '/usr/lib/x86_64-linux-gnu/ulogd',
    );
    expect(findUlogdPluginDir('arm64', has(['/usr/lib64/ulogd']), () => [])).toBe('/usr/lib64/ulogd');
    expect(
      findUlogdPluginDir('mips', has(['/usr/lib/mipsel-linux-gnu/ulogd']), () => ['mipsel-linux-gnu']),
    ).toBe('/usr/lib/mipsel-linux-gnu/ulogd');
    expect(
      findUlogdPluginDir(
        'x64',
        () => false,
        () => [],
      ),
    ).toBeUndefined();
  });
});

describe('parseUlogdLine', () => {
  it('reads a real IPv4 TCP line', () => {
    expect(parseUlogdLine(TCP4)).toEqual({
      ok: true,
      raw: {
        time: 1795302445900,
        prefix: 'sluice:drop:hmi-to-plc:no-flow:',
        family: 4,
        ipProtocol: 6,
        src: '127.0.0.1',
        dst: '127.0.0.2',
        srcPort: 45338,
        dstPort: 502,
        outIface: 'lo',
        length: 60,
      },
    });
  });

  it('reads a real IPv6 UDP line', () => {
    const r = parseUlogdLine(UDP6);
    expect(r.ok && r.raw).toMatchObject({ family: 6, ipProtocol: 17, src: '::1', dst: '::1', dstPort: 99 });
  });

  it('reads ICMP type and code, and the input interface', () => {
    const r = parseUlogdLine(line({ 'icmp.type': 8, 'icmp.code': 0, 'oob.in': 'veth-ent' }));
    expect(r.ok && r.raw).toMatchObject({
      ipProtocol: 1,
      icmpType: 8,
      icmpCode: 0,
      inIface: 'veth-ent',
      time: 1_700_000_000_005,
    });
  });

  it('falls back to the timestamp field when oob.time is absent', () => {
    const r = parseUlogdLine(line({ 'oob.time.sec': undefined, timestamp: '2026-01-02T03:04:05.678' }));
    expect(r.ok && r.raw.time).toBe(new Date(2026, 0, 2, 3, 4, 5, 678).getTime());
  });

  it.each([
    ['', 'empty'],
    ['   ', 'empty'],
    ['not json', 'not-json-object'],
    ['{"oob.prefix": "x", ', 'invalid-json'],
    ['[1,2]', 'not-json-object'],
    ['{}', 'no-prefix'],
    [line({ 'oob.prefix': 5 }), 'no-prefix'],
    [line({ 'oob.time.sec': 'soon' }), 'no-time'],
    [line({ src_ip: undefined }), 'not-ip'],
    [line({ src_ip: '10.1.0.300' }), 'bad-address'],
    [line({ src_ip: '::1' }), 'bad-address'],
    [line({ 'ip.protocol': 999 }), 'no-protocol'],
    ['{' + ' '.repeat(MAX_ULOGD_LINE) + '}', 'too-long'],
  ])('rejects %j with a reason', (input, reason) => {
    expect(parseUlogdLine(input)).toEqual({ ok: false, reason });
  });

  it('drops fields of the wrong type or range instead of trusting them', () => {
    const r = parseUlogdLine(
      line({ src_port: '80', dest_port: 70000, 'oob.in': 'a very long interface name', 'oob.out': 'x/y' }),
    );
    expect(r.ok).toBe(true);
    if (r.ok) {
      expect(r.raw.srcPort).toBeUndefined();
      expect(r.raw.dstPort).toBeUndefined();
      expect(r.raw.inIface).toBeUndefined();
      expect(r.raw.outIface).toBeUndefined();
    }
  });

  it('ignores inherited properties (no prototype tricks)', () => {
    const r = parseUlogdLine('{"__proto__": {"oob.prefix": "sluice:drop:c:no-flow:"}, "src_ip": "1.1.1.1"}');
    expect(r).toEqual({ ok: false, reason: 'no-prefix' });
  });

  it('never throws, whatever the input', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          fc.json(),
          fc.jsonValue().map((v) => JSON.stringify(v)),
        ),
        (s) => {
          const r = parseUlogdLine(s);
          expect(typeof r.ok).toBe('boolean');
        },
      ),
      { numRuns: 2000 },
    );
    fc.assert(
      fc.property(
        fc.dictionary(
          fc.constantFrom(
            'oob.prefix',
            'oob.time.sec',
            'oob.time.usec',
            'src_ip',
            'dest_ip',
            'ip.protocol',
            'src_port',
            'oob.in',
            'timestamp',
          ),
          fc.jsonValue(),
        ),
        (o) => {
          expect(typeof parseUlogdLine(JSON.stringify(o)).ok).toBe('boolean');
        },
      ),
      { numRuns: 2000 },
    );
  });
});

describe('toBlockedEvent', () => {
  const zonesOf = (c: string | undefined, raw: UlogdRecord) =>
    c === 'hmi-to-plc'
      ? { fromZone: 'enterprise', toZone: 'control' }
      : raw.outIface === 'lo'
        ? { fromZone: 'gateway' }
        : undefined;

  it('maps a Sluice line to an event with its conduit, zones and verdict', () => {
    const r = parseUlogdLine(TCP4);
    if (!r.ok) throw new Error(r.reason);
    expect(toBlockedEvent(r.raw, zonesOf)).toEqual({
      time: 1795302445900,
      fromZone: 'enterprise',
      toZone: 'control',
      conduit: 'hmi-to-plc',
      outIface: 'lo',
      src: '127.0.0.1',
      dst: '127.0.0.2',
      srcPort: 45338,
      dstPort: 502,
      protocol: 'tcp',
      verdict: 'drop',
      reason: 'no-flow',
      source: 'nflog',
      count: 1,
    });
  });

  it('leaves the conduit out for drops outside any conduit and still asks for zones', () => {
    const r = parseUlogdLine(UDP6);
    if (!r.ok) throw new Error(r.reason);
    const e = toBlockedEvent(r.raw, zonesOf);
    expect(e).toMatchObject({
      verdict: 'would-drop',
      reason: 'no-conduit',
      protocol: 'udp',
      fromZone: 'gateway',
    });
    expect(e && 'conduit' in e).toBe(false);
  });

  it('uses the prefix format the compiler writes', () => {
    const prefix = formatLogPrefix({ verdict: 'would-drop', conduit: 'scada-link', reason: 'no-flow' });
    const r = parseUlogdLine(line({ 'oob.prefix': prefix, 'icmp.type': 8, 'icmp.code': 0 }));
    if (!r.ok) throw new Error(r.reason);
    expect(toBlockedEvent(r.raw, () => undefined)).toMatchObject({
      conduit: 'scada-link',
      verdict: 'would-drop',
      protocol: 'icmp',
      detail: { icmpType: 8, icmpCode: 0 },
    });
  });

  it('returns null for prefixes Sluice did not write', () => {
    for (const prefix of [
      '',
      'IN=eth0',
      'sluice:accept:c1:no-flow:',
      'sluice:drop:C1:no-flow:',
      'sluice:drop:c1:made-up:',
    ]) {
      const r = parseUlogdLine(line({ 'oob.prefix': prefix }));
      if (!r.ok) throw new Error(r.reason);
      expect(toBlockedEvent(r.raw, () => undefined)).toBeNull();
    }
  });
});

describe('JsonLineFollower', () => {
  let dir: string;
  let follower: JsonLineFollower | undefined;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'sluice-follow-'));
  });
  afterEach(async () => {
    await follower?.stop();
    follower = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  async function until(cond: () => boolean, ms = 3000): Promise<void> {
    const end = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > end) throw new Error('timed out waiting for the follower');
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  function follow(file: string, opts: ConstructorParameters<typeof JsonLineFollower>[1] = {}) {
    const got: string[] = [];
    const resets: string[] = [];
    const overlong: number[] = [];
    follower = new JsonLineFollower(file, { pollMs: 100, ...opts });
    follower.on('lines', (ls) => got.push(...ls));
    follower.on('reset', (why) => resets.push(why));
    follower.on('overlong', (n) => overlong.push(n));
    return { f: follower, got, resets, overlong };
  }

  it('starts at the end by default and emits appended lines, holding back a partial last line', async () => {
    const file = join(dir, 'a.json');
    writeFileSync(file, 'old-1\nold-2\n');
    const { f, got } = follow(file);
    await f.start();
    appendFileSync(file, 'new-1\nnew-');
    await until(() => got.length >= 1);
    expect(got).toEqual(['new-1']);
    appendFileSync(file, '2\r\n\nnew-3\n');
    await until(() => got.length >= 3);
    expect(got).toEqual(['new-1', 'new-2', 'new-3']);
    expect(f.position).toBe(Buffer.byteLength('old-1\nold-2\nnew-1\nnew-2\r\n\nnew-3\n'));
  });

  it('can start at the beginning or at a saved offset', async () => {
    const file = join(dir, 'b.json');
    writeFileSync(file, 'one\ntwo\nthree\n');
    const a = follow(file, { start: 'beginning' });
    await a.f.start();
    expect(a.got).toEqual(['one', 'two', 'three']);
    await a.f.stop();
    const b = follow(file, { start: 4 });
    await b.f.start();
    expect(b.got).toEqual(['two', 'three']);
  });

  it('waits for a missing file and reads it whole once it appears', async () => {
    const file = join(dir, 'later.json');
    const { f, got } = follow(file);
    await f.start();
    writeFileSync(file, 'first\nsecond\n');
    await until(() => got.length >= 2);
    expect(got).toEqual(['first', 'second']);
  });

  it('restarts from the beginning after truncation', async () => {
    const file = join(dir, 'c.json');
    writeFileSync(file, 'aaaaaaaaaa\nbbbbbbbbbb\n');
    const { f, got, resets } = follow(file);
    await f.start();
    truncateSync(file, 0);
    appendFileSync(file, 'c\n');
    await until(() => got.length >= 1);
    expect(got).toEqual(['c']);
    expect(resets).toEqual(['truncated']);
  });

  it('finishes the old file and follows the new one after rename rotation', async () => {
    const file = join(dir, 'd.json');
    writeFileSync(file, '');
    const { f, got, resets } = follow(file);
    await f.start();
    appendFileSync(file, 'before\n');
    await until(() => got.length >= 1);
    // Written after the last read but before the rename: must not be lost.
    appendFileSync(file, 'late\n');
    renameSync(file, `${file}.1`);
    writeFileSync(file, 'after\n');
    await until(() => got.length >= 3);
    expect(got).toEqual(['before', 'late', 'after']);
    expect(resets).toEqual(['rotated']);
  });

  it('drops overlong lines without buffering them and carries on', async () => {
    const file = join(dir, 'e.json');
    writeFileSync(file, '');
    const { f, got, overlong } = follow(file, { maxLineBytes: 100, readBytes: 64 });
    await f.start();
    appendFileSync(file, `ok-1\n${'x'.repeat(1000)}\nok-2\n${'y'.repeat(150)}`);
    await until(() => got.length >= 2);
    appendFileSync(file, '\nok-3\n');
    await until(() => got.length >= 3);
    expect(got).toEqual(['ok-1', 'ok-2', 'ok-3']);
    expect(overlong).toEqual([1000, 150]);
  });

  it('reads a burst of many lines in order', async () => {
    const file = join(dir, 'f.json');
    writeFileSync(file, '');
    const { f, got } = follow(file, { readBytes: 4096 });
    await f.start();
    const lines = Array.from({ length: 5000 }, (_, i) => line({ 'oob.time.usec': i }));
    appendFileSync(file, lines.join('\n') + '\n');
    await until(() => got.length >= 5000);
    expect(got).toEqual(lines);
  });
});
