/**
 * NFLOG → ulogd2 → JSON lines → BlockedEvent.
 *
 * nftables logs each refused packet to an NFLOG group with a prefix `sluice:<verdict>:<conduit>:<reason>:`
 * (policies/compile.ts formatLogPrefix/parseLogPrefix own that format; the conduit is empty outside conduits);
 * ulogd2 (Debian `ulogd2` + `ulogd2-json`) turns them into one JSON object per line; `JsonLineFollower` tails
 * that file and `parseUlogdLine` + `toBlockedEvent` turn each line into the store's event type.
 * The parsing functions are pure and total: a line written by anything (a different ulogd version, a
 * half-written line, garbage) yields a reason, never an exception, because the daemon must keep running.
 */
import { EventEmitter } from 'node:events';
import { existsSync, readdirSync, watch, type FSWatcher } from 'node:fs';
import { open, stat, type FileHandle } from 'node:fs/promises';
import { isIP } from 'node:net';
import { basename, dirname, isAbsolute, join } from 'node:path';
import { SluiceError } from '../policies/errors.ts';
import { parseLogPrefix } from '../policies/compile.ts';
import type { BlockedEvent } from './events.ts';

// ---------------------------------------------------------------------------------------------------------
// Configuration

/** Plugins the JSON stack needs; the JSON output comes from the separate `ulogd2-json` package. */
const ULOGD_PLUGINS = [
  'ulogd_inppkt_NFLOG.so',
  'ulogd_raw2packet_BASE.so',
  'ulogd_filter_IFINDEX.so',
  'ulogd_filter_IP2STR.so',
  'ulogd_output_JSON.so',
] as const;

/** Debian multiarch triplets by Node's `process.arch`: where ulogd2's plugins live on each gateway CPU. */
const MULTIARCH: Readonly<Record<string, readonly string[]>> = {
  x64: ['x86_64-linux-gnu'],
  arm64: ['aarch64-linux-gnu'],
  arm: ['arm-linux-gnueabihf', 'arm-linux-gnueabi'],
  ia32: ['i386-linux-gnu'],
  riscv64: ['riscv64-linux-gnu'],
  ppc64: ['powerpc64le-linux-gnu'],
  s390x: ['s390x-linux-gnu'],
  loong64: ['loongarch64-linux-gnu'],
};

/**
 * The directory holding ulogd2's plugins (with the JSON output), or undefined when ulogd2/ulogd2-json are
 * not installed. Tries this architecture's multiarch path first, then non-Debian layouts, then any
 * multiarch directory (e.g. a foreign-architecture install).
 */
export function findUlogdPluginDir(
  arch: string = process.arch,
  exists: (path: string) => boolean = existsSync,
  listLibDirs: () => string[] = defaultLibDirs,
): string | undefined {
  const candidates = [
    ...(MULTIARCH[arch] ?? []).map((t) => `/usr/lib/${t}/ulogd`),
    '/usr/lib/ulogd',
    '/usr/lib64/ulogd',
    '/usr/local/lib/ulogd',
    ...listLibDirs().map((d) => `/usr/lib/${d}/ulogd`),
  ];
  return candidates.find((dir) => exists(join(dir, 'ulogd_output_JSON.so')));
}

function defaultLibDirs(): string[] {
  try {
    return readdirSync('/usr/lib').filter((d) => d.includes('-linux-'));
  } catch {
    return [];
  }
}

export interface UlogdConfigOptions {
  /** NFLOG group the ruleset logs to (`log group N`). */
  group: number;
  /** Absolute path of the JSON lines file ulogd2 appends to. */
  jsonFile: string;
  /** Plugin directory; detected when absent. */
  pluginDir?: string;
  /** ulogd2's own status log: a file path, `syslog`, or `stdout` (the default: journald under systemd). */
  logFile?: string;
}

/** Paths go inside double quotes in ulogd.conf: refuse anything that could end the string or the line. */
function checkConfPath(what: string, p: string): void {
  if (!isAbsolute(p) || /["\\\n\r\0]/.test(p)) {
    throw new SluiceError(
      'ulogd.bad-path',
      `${what} must be an absolute path without quotes or backslashes: ${p}`,
    );
  }
}

/** The text of an ulogd.conf with a single NFLOG → JSON stack. */
export function ulogdConfig(opts: UlogdConfigOptions): string {
  if (!Number.isInteger(opts.group) || opts.group < 0 || opts.group > 65535) {
    throw new SluiceError('ulogd.bad-group', `NFLOG group must be an integer 0..65535, got ${opts.group}`);
  }
  checkConfPath('jsonFile', opts.jsonFile);
  const pluginDir = opts.pluginDir ?? findUlogdPluginDir();
  if (pluginDir === undefined) {
    throw new SluiceError(
      'ulogd.not-installed',
      'ulogd2 JSON plugin not found: install the ulogd2 and ulogd2-json packages',
      { userError: false },
    );
  }
  checkConfPath('pluginDir', pluginDir);
  const logFile = opts.logFile ?? 'stdout';
  if (logFile !== 'stdout' && logFile !== 'syslog') checkConfPath('logFile', logFile);
  return [
    '# Written by Sluice: NFLOG (nftables `log group`) → JSON lines followed by the Sluice daemon.',
    '[global]',
    `logfile="${logFile}"`,
    // 5 = notice: start-up and errors only; per-packet lines go to the JSON file, not here.
    'loglevel=5',
    ...ULOGD_PLUGINS.map((p) => `plugin="${pluginDir}/${p}"`),
    'stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,json1:JSON',
    '',
    '[log1]',
    `group=${opts.group}`,
    // A drop flood must not overflow the netlink socket silently: start at 2 MiB, let ulogd grow it to 8 MiB.
    'netlink_socket_buffer_size=2097152',
    'netlink_socket_buffer_maxsize=8388608',
    // Hand each packet to ulogd at once (measured: without these lines the kernel held a lone drop for ~1 s,
    // its default flush timeout); under a flood messages still batch in the socket buffer.
    'netlink_qthreshold=1',
    'netlink_qtimeout=1',
    '',
    '[json1]',
    // Flush every line: the daemon reports drops within seconds, not when a stdio buffer fills.
    'sync=1',
    `file="${opts.jsonFile}"`,
    '',
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------------------
// Parsing

/** ulogd2 JSON lines are ~1 KiB; anything far longer is not one of them. */
export const MAX_ULOGD_LINE = 16 * 1024;

/** The fields Sluice uses from one ulogd2 JSON record, checked and normalised. */
export interface UlogdRecord {
  /** ms since the epoch (from `oob.time.sec`/`oob.time.usec`, else `timestamp`). */
  time: number;
  prefix: string;
  family: 4 | 6;
  /** IANA protocol number (`ip.protocol`; `ip6.nexthdr` as fallback). */
  ipProtocol: number;
  src: string;
  dst: string;
  srcPort?: number;
  dstPort?: number;
  inIface?: string;
  outIface?: string;
  icmpType?: number;
  icmpCode?: number;
  /** Packet length in bytes, when present. */
  length?: number;
}

export type UlogdParseResult = { ok: true; raw: UlogdRecord } | { ok: false; reason: string };

function field(o: Record<string, unknown>, key: string): unknown {
  return Object.hasOwn(o, key) ? o[key] : undefined;
}

function intField(o: Record<string, unknown>, key: string, min: number, max: number): number | undefined {
  const v = field(o, key);
  return typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max ? v : undefined;
}

function ifaceField(o: Record<string, unknown>, key: string): string | undefined {
  const v = field(o, key);
  // IFNAMSIZ is 16 including the NUL; ulogd writes "" when the hook has no such interface.
  return typeof v === 'string' && v !== '' && v.length <= 15 && !/[\s\0/]/.test(v) ? v : undefined;
}

/** Parse one line of ulogd2's JSON output; never throws. */
export function parseUlogdLine(line: string): UlogdParseResult {
  if (typeof line !== 'string') return { ok: false, reason: 'not-a-string' };
  if (line.length > MAX_ULOGD_LINE) return { ok: false, reason: 'too-long' };
  const text = line.trim();
  if (text === '') return { ok: false, reason: 'empty' };
  if (!text.startsWith('{')) return { ok: false, reason: 'not-json-object' };
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return { ok: false, reason: 'invalid-json' };
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    return { ok: false, reason: 'not-json-object' };
  }
  const o = parsed as Record<string, unknown>;

  const prefix = field(o, 'oob.prefix');
  if (typeof prefix !== 'string') return { ok: false, reason: 'no-prefix' };

  let time: number | undefined;
  const sec = intField(o, 'oob.time.sec', 0, 2 ** 40);
  if (sec !== undefined) {
    const usec = intField(o, 'oob.time.usec', 0, 999_999) ?? 0;
    time = sec * 1000 + Math.floor(usec / 1000);
  } else {
    // ulogd writes `timestamp` in local time without an offset, which Date.parse also reads as local time.
    const ts = field(o, 'timestamp');
    const t = typeof ts === 'string' && ts.length <= 40 ? Date.parse(ts) : NaN;
    if (Number.isFinite(t)) time = t;
  }
  if (time === undefined) return { ok: false, reason: 'no-time' };

  const src = field(o, 'src_ip');
  const dst = field(o, 'dest_ip');
  if (typeof src !== 'string' || typeof dst !== 'string') return { ok: false, reason: 'not-ip' };
  const srcFamily = isIP(src);
  const dstFamily = isIP(dst);
  if (srcFamily === 0 || dstFamily === 0 || srcFamily !== dstFamily)
    return { ok: false, reason: 'bad-address' };
  const family = srcFamily === 6 ? 6 : 4;

  const ipProtocol = intField(o, 'ip.protocol', 0, 255) ?? intField(o, 'ip6.nexthdr', 0, 255);
  if (ipProtocol === undefined) return { ok: false, reason: 'no-protocol' };

  const raw: UlogdRecord = { time, prefix, family, ipProtocol, src, dst };
  const srcPort = intField(o, 'src_port', 0, 65535);
  const dstPort = intField(o, 'dest_port', 0, 65535);
  if (srcPort !== undefined) raw.srcPort = srcPort;
  if (dstPort !== undefined) raw.dstPort = dstPort;
  const inIface = ifaceField(o, 'oob.in');
  const outIface = ifaceField(o, 'oob.out');
  if (inIface !== undefined) raw.inIface = inIface;
  if (outIface !== undefined) raw.outIface = outIface;
  const icmpType = intField(o, family === 6 ? 'icmpv6.type' : 'icmp.type', 0, 255);
  const icmpCode = intField(o, family === 6 ? 'icmpv6.code' : 'icmp.code', 0, 255);
  if (icmpType !== undefined) raw.icmpType = icmpType;
  if (icmpCode !== undefined) raw.icmpCode = icmpCode;
  const length = intField(o, 'raw.pktlen', 0, 2 ** 31);
  if (length !== undefined) raw.length = length;
  return { ok: true, raw };
}

const PROTOCOL_NAMES: Readonly<Record<number, string>> = {
  1: 'icmp',
  6: 'tcp',
  17: 'udp',
  58: 'icmpv6',
  132: 'sctp',
};

/**
 * Zones for an event: from the conduit when there is one, else (for `no-conduit` drops) typically from the
 * interfaces. Supplied by the daemon, which knows the running policy.
 */
export type ZoneResolver = (
  conduit: string | undefined,
  raw: UlogdRecord,
) => { fromZone?: string; toZone?: string } | undefined;

/** The store's event for one ulogd record, or null when the prefix is not one Sluice's compiler writes. */
export function toBlockedEvent(raw: UlogdRecord, resolve: ZoneResolver): BlockedEvent | null {
  const p = parseLogPrefix(raw.prefix);
  if (p === undefined) return null;
  const e: BlockedEvent = {
    time: raw.time,
    src: raw.src,
    dst: raw.dst,
    protocol: PROTOCOL_NAMES[raw.ipProtocol] ?? String(raw.ipProtocol),
    verdict: p.verdict,
    reason: p.reason,
    source: 'nflog',
    count: 1,
  };
  if (p.conduit !== undefined) e.conduit = p.conduit;
  const zones = resolve(p.conduit, raw);
  if (zones?.fromZone !== undefined) e.fromZone = zones.fromZone;
  if (zones?.toZone !== undefined) e.toZone = zones.toZone;
  if (raw.inIface !== undefined) e.inIface = raw.inIface;
  if (raw.outIface !== undefined) e.outIface = raw.outIface;
  if (raw.srcPort !== undefined) e.srcPort = raw.srcPort;
  if (raw.dstPort !== undefined) e.dstPort = raw.dstPort;
  if (raw.icmpType !== undefined) {
    e.detail =
      raw.icmpCode === undefined
        ? { icmpType: raw.icmpType }
        : { icmpType: raw.icmpType, icmpCode: raw.icmpCode };
  }
  return e;
}

// ---------------------------------------------------------------------------------------------------------
// Following the JSON file

export interface JsonLineFollowerOptions {
  /** Where to begin in an existing file: its end (default: history is not re-ingested), start, or an offset. */
  start?: 'end' | 'beginning' | number;
  /** Longer lines are dropped (and counted via `overlong`) instead of buffering without bound. */
  maxLineBytes?: number;
  /** Fallback poll for when fs.watch misses an event (network file systems, some overlays). Default 2000 ms. */
  pollMs?: number;
  /** Bytes per read; also the most lines' worth emitted in one `lines` event. Default 256 KiB. */
  readBytes?: number;
}

interface FollowerEvents {
  /** Complete lines, without their newline, in file order. */
  lines: [lines: string[]];
  /** The file was truncated or replaced: reading restarted at its beginning. */
  reset: [why: 'truncated' | 'rotated'];
  /** A line longer than `maxLineBytes` was dropped. */
  overlong: [bytes: number];
  error: [err: Error];
}

/**
 * Follows a growing file of lines, like `tail -F`: new data is read when fs.watch reports a change on the
 * directory (which, unlike a watch on the file, survives rename-based rotation), with a slow poll as a
 * fallback. Handles truncation (copytruncate), replacement (rename + create), a missing file, partial last
 * lines and overlong lines. No busy polling: it is idle while the file does not change.
 */
export class JsonLineFollower extends EventEmitter<FollowerEvents> {
  readonly path: string;
  #start: 'end' | 'beginning' | number;
  #maxLine: number;
  #pollMs: number;
  #buf: Buffer;
  #fh: FileHandle | undefined;
  #ino = -1;
  #pos = 0;
  #partial: Buffer[] = [];
  #partialLen = 0;
  /** Inside an overlong line: discard until its newline. */
  #skipping = false;
  #skipped = 0;
  #watcher: FSWatcher | undefined;
  #timer: NodeJS.Timeout | undefined;
  #running = false;
  #reading: Promise<void> | undefined;
  #again = false;
  #firstOpen = true;

  constructor(path: string, opts: JsonLineFollowerOptions = {}) {
    super();
    this.path = path;
    this.#start = opts.start ?? 'end';
    this.#maxLine = opts.maxLineBytes ?? 64 * 1024;
    this.#pollMs = opts.pollMs ?? 2000;
    this.#buf = Buffer.allocUnsafe(opts.readBytes ?? 256 * 1024);
  }

  /** Byte offset of the next unread byte (the start of any partial line is behind it). */
  get position(): number {
    return this.#pos;
  }

  async start(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    try {
      this.#watcher = watch(dirname(this.path), { persistent: true }, (_type, name) => {
        if (name === null || name === basename(this.path)) this.#kick();
      });
      this.#watcher.on('error', () => {
        // The poll keeps working; a watcher error (directory removed) must not end following.
        this.#watcher?.close();
        this.#watcher = undefined;
      });
    } catch {
      // No directory yet, or no inotify: the poll alone will do.
    }
    this.#timer = setInterval(() => this.#kick(), this.#pollMs);
    this.#kick();
    await this.#reading;
  }

  async stop(): Promise<void> {
    this.#running = false;
    this.#watcher?.close();
    this.#watcher = undefined;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#reading;
    await this.#fh?.close();
    this.#fh = undefined;
  }

  /** Read now (e.g. after the caller knows the file changed). Resolves when caught up. */
  async poll(): Promise<void> {
    this.#kick();
    await this.#reading;
  }

  #kick(): void {
    if (!this.#running) return;
    if (this.#reading !== undefined) {
      this.#again = true;
      return;
    }
    this.#reading = (async () => {
      try {
        do {
          this.#again = false;
          await this.#catchUp();
        } while (this.#again && this.#running);
      } catch (err) {
        if (this.listenerCount('error') > 0)
          this.emit('error', err instanceof Error ? err : new Error(String(err)));
      } finally {
        this.#reading = undefined;
      }
    })();
  }

  async #catchUp(): Promise<void> {
    const st = await stat(this.path).catch(() => undefined);
    if (this.#fh !== undefined) {
      if (st === undefined || st.ino !== this.#ino) {
        // Replaced or removed: finish the old file first, so nothing written before the rotation is lost.
        await this.#readToEnd();
        this.#flushPartial();
        await this.#fh.close();
        this.#fh = undefined;
        if (st === undefined) return;
        await this.#open(0);
        this.emit('reset', 'rotated');
      } else if (st.size < this.#pos) {
        this.#pos = 0;
        this.#resetLine();
        this.emit('reset', 'truncated');
      }
    } else {
      // Only a file present at start may be skipped; one that appears later is new and read whole.
      const first = this.#firstOpen;
      this.#firstOpen = false;
      if (st === undefined) return;
      let from = 0;
      if (first) {
        from =
          this.#start === 'end' ? st.size : this.#start === 'beginning' ? 0 : Math.min(this.#start, st.size);
      }
      await this.#open(from);
    }
    await this.#readToEnd();
  }

  async #open(from: number): Promise<void> {
    this.#fh = await open(this.path, 'r');
    this.#ino = (await this.#fh.stat()).ino;
    this.#pos = from;
    this.#resetLine();
  }

  /** Forget any partial or overlong line: reading starts over at a line boundary. */
  #resetLine(): void {
    this.#partial = [];
    this.#partialLen = 0;
    this.#skipping = false;
  }

  async #readToEnd(): Promise<void> {
    const fh = this.#fh;
    if (fh === undefined) return;
    for (;;) {
      const { bytesRead } = await fh.read(this.#buf, 0, this.#buf.length, this.#pos);
      if (bytesRead === 0) return;
      this.#pos += bytesRead;
      this.#split(this.#buf, bytesRead);
    }
  }

  #split(buf: Buffer, n: number): void {
    const lines: string[] = [];
    let start = 0;
    for (;;) {
      const nl = buf.indexOf(0x0a, start);
      if (nl === -1 || nl >= n) break;
      if (this.#skipping) {
        this.#skipping = false;
        this.emit('overlong', this.#skipped + (nl - start));
      } else if (this.#partialLen + (nl - start) > this.#maxLine) {
        this.emit('overlong', this.#partialLen + (nl - start));
      } else {
        const line =
          this.#partialLen === 0
            ? buf.toString('utf8', start, nl)
            : Buffer.concat([...this.#partial, buf.subarray(start, nl)]).toString('utf8');
        const trimmed = line.endsWith('\r') ? line.slice(0, -1) : line;
        if (trimmed !== '') lines.push(trimmed);
      }
      this.#partial = [];
      this.#partialLen = 0;
      start = nl + 1;
    }
    if (start < n) {
      const rest = n - start;
      if (this.#skipping) {
        this.#skipped += rest;
      } else if (this.#partialLen + rest > this.#maxLine) {
        this.#skipping = true;
        this.#skipped = this.#partialLen + rest;
        this.#partial = [];
        this.#partialLen = 0;
      } else {
        // Copy: the read buffer is reused.
        this.#partial.push(Buffer.from(buf.subarray(start, n)));
        this.#partialLen += rest;
      }
    }
    if (lines.length > 0) this.emit('lines', lines);
  }

  /** At rotation, a last line without newline is complete as far as that file goes. */
  #flushPartial(): void {
    if (this.#partialLen > 0 && !this.#skipping) {
      const line = Buffer.concat(this.#partial).toString('utf8');
      if (line.trim() !== '') this.emit('lines', [line]);
    }
    this.#resetLine();
  }
}
