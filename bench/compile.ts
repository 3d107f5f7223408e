/**
 * Compile benchmark: `node bench/compile.ts [--conduits 1000] [--assets 5000] [--runs 5] [--seconds 5]
 * [--rounds 5] [--no-throughput] [--strict]`.
 *
 * (a) Generates a large policy (default 1,000 conduits / 5,000 assets), times validation and compilation
 *     separately (median of `runs`) and prints the ruleset's size. Goal: compile < 0.5 s.
 * (b) Forward throughput of one TCP stream (iperf3) through a gateway namespace, with an empty ruleset and
 *     with that large ruleset loaded, in the same run and the same lab. The lab's two zones take the
 *     interfaces and networks of the generated policy's first conduit, and the stream's port is a flow of
 *     that conduit, so its packets go through the zone-pair vmap dispatch and a real conduit chain (checked
 *     afterwards on the flow's counter). Goal: loaded / empty ≥ 0.95.
 *
 * Rounds alternate empty/loaded in an A-B-B-A order so that a slow drift of the shared machine's load
 * (other jobs start or stop) does not favour either side. `--strict` exits 1 when a goal is missed.
 */
import { availableParallelism, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { generatePolicyModel, type GeneratedPolicy } from './gen-policy.ts';
import { validatePolicyText } from '../policies/validate.ts';
import { compilePolicy, flowCounterName } from '../policies/compile.ts';
import { Nft } from '../gateway/nft.ts';
import { run, tcpProbe, waitForTcpListen } from '../test/lab/netns.ts';
import { labUp, type Lab } from '../test/lab/topology.ts';

const LAB_PREFIX = 'slcB';
const STREAM_PORT = 5201;
const COMPILE_GOAL_S = 0.5;
const RATIO_GOAL = 0.95;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  const hi = s[mid] ?? NaN;
  return s.length % 2 === 1 ? hi : ((s[mid - 1] ?? NaN) + hi) / 2;
}

function fmtS(ms: number): string {
  return `${(ms / 1000).toFixed(3)} s`;
}

function timeIt<T>(fn: () => T): { ms: number; value: T } {
  const t0 = performance.now();
  const value = fn();
  return { ms: performance.now() - t0, value };
}

interface CompileFigures {
  zones: number;
  yamlBytes: number;
  generateMs: number;
  validateMs: number[];
  compileMs: number[];
  rulesetBytes: number;
  rulesetLines: number;
  warnings: number;
  ruleset: string;
}

function benchCompile(gen: GeneratedPolicy, runs: number): CompileFigures {
  const validateMs: number[] = [];
  const compileMs: number[] = [];
  let ruleset = '';
  let warnings = 0;
  for (let i = 0; i < runs; i++) {
    const v = timeIt(() => validatePolicyText(gen.text, 'generated.yaml', { now: new Date() }));
    validateMs.push(v.ms);
    const policy = v.value.policy;
    if (!v.value.ok || policy === undefined) {
      const first = v.value.errors
        .slice(0, 5)
        .map((e) => `  ${e.path.join('.')}: ${e.message}`)
        .join('\n');
      throw new Error(`the generated policy does not validate:\n${first}`);
    }
    warnings = v.value.warnings.length;
    const c = timeIt(() => compilePolicy(policy));
    compileMs.push(c.ms);
    // Same input, byte-identical output (issue 2): a benchmark run is a cheap place to notice otherwise.
    if (i > 0 && c.value.ruleset !== ruleset) throw new Error('compilePolicy is not deterministic');
    ruleset = c.value.ruleset;
  }
  return {
    zones: gen.zones.length,
    yamlBytes: Buffer.byteLength(gen.text),
    generateMs: 0,
    validateMs,
    compileMs,
    rulesetBytes: Buffer.byteLength(ruleset),
    rulesetLines: ruleset.split('\n').length,
    warnings,
    ruleset,
  };
}

/** What the gateway namespace holds during a measurement. */
type GwState = 'empty' | 'small' | 'large';
const STATES: readonly GwState[] = ['empty', 'small', 'large'];

interface ThroughputFigures {
  gbps: Record<GwState, number[]>;
  /** Median time of `nft -f` for the large ruleset. */
  loadMs: number;
  streamCounterPackets: number;
  forbiddenOutcome: string;
}

interface Iperf3Json {
  error?: string;
  end?: { sum_received?: { bits_per_second?: number } };
}

async function iperf(lab: Lab, clientNs: string, server: string, seconds: number): Promise<number> {
  const r = await lab.exec(
    clientNs,
    'iperf3',
    // -O 1: leave TCP slow start out of the figure, it is the same with or without a ruleset.
    [
      '-c',
      server,
      '-p',
      String(STREAM_PORT),
      '-t',
      String(seconds),
      '-O',
      '1',
      '-J',
      '--connect-timeout',
      '3000',
    ],
    { reject: false, timeout: (seconds + 20) * 1000 },
  );
  let doc: Iperf3Json;
  try {
    doc = JSON.parse(r.stdout) as Iperf3Json;
  } catch {
    throw new Error(`iperf3 client: exit ${r.exitCode}: ${r.stderr || r.stdout}`);
  }
  const bps = doc.end?.sum_received?.bits_per_second;
  if (doc.error !== undefined || bps === undefined || r.exitCode !== 0) {
    throw new Error(`iperf3 client failed: ${doc.error ?? `exit ${r.exitCode}`}`);
  }
  return bps / 1e9;
}

/**
 * Measures the stream with the gateway in each state, `rounds` times. `small` is a 1-conduit policy
 * carrying the same stream flow: the difference between empty and small is the price of stateful
 * filtering itself (conntrack on every packet), the difference between small and large is what the
 * policy's size costs, which the compiler's sets and verdict maps are meant to keep at zero.
 */
async function benchThroughput(
  gen: GeneratedPolicy,
  rulesets: { small: string; large: string },
  seconds: number,
  rounds: number,
): Promise<ThroughputFigures> {
  const s = gen.stream;
  const src = s?.from.assets[0];
  const dst = s?.to.assets[0];
  if (!s || !src || !dst) throw new Error('the generated policy has no stream flow between two assets');
  const lab = await labUp({
    prefix: LAB_PREFIX,
    zones: [
      {
        name: s.from.name,
        iface: s.from.iface,
        subnet: s.from.network,
        hosts: [{ name: 'client', address: src.address }],
      },
      {
        name: s.to.name,
        iface: s.to.iface,
        subnet: s.to.network,
        hosts: [{ name: 'server', address: dst.address }],
      },
    ],
  });
  const onSignal = (): void => {
    void lab.down().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const clientNs = lab.hostNs(s.from.name, 'client');
    const serverNs = lab.hostNs(s.to.name, 'server');
    lab.spawn(serverNs, 'iperf3', ['-s', '-p', String(STREAM_PORT)], { stdout: 'ignore', stderr: 'ignore' });
    await waitForTcpListen(serverNs, STREAM_PORT);
    const nft = new Nft({ netns: lab.gw });

    const gbps: Record<GwState, number[]> = { empty: [], small: [], large: [] };
    const loadMs: number[] = [];
    let current: GwState = 'empty';
    const setState = async (want: GwState): Promise<void> => {
      if (want === current) return;
      if (want === 'empty') {
        await nft.deleteTable();
      } else {
        // Each script replaces the whole table in one transaction, so no delete is needed in between.
        const t0 = performance.now();
        await nft.load(rulesets[want]);
        if (want === 'large') loadMs.push(performance.now() - t0);
      }
      current = want;
    };
    let streamCounterPackets = 0;
    let forbiddenOutcome = '';
    for (let r = 0; r < rounds; r++) {
      // A-B-C then C-B-A: a slow drift of the shared machine's load favours no state.
      for (const state of r % 2 === 0 ? STATES : [...STATES].reverse()) {
        await setState(state);
        const g = await iperf(lab, clientNs, dst.address, seconds);
        gbps[state].push(g);
        console.log(`  round ${r + 1}: ${state.padEnd(5)} ${g.toFixed(2)} Gbit/s`);
        if (state === 'large') {
          // Proof that the stream really crossed the conduit chain (read before a reload resets the
          // counters), and that the loaded ruleset filters at all: a port outside the policy is dropped.
          const counters = await nft.counters();
          streamCounterPackets += counters[flowCounterName(s.conduit, s.flow)]?.packets ?? 0;
          if (forbiddenOutcome === '') {
            forbiddenOutcome = (await tcpProbe(clientNs, dst.address, STREAM_PORT + 1, 1000)).outcome;
          }
        }
      }
    }
    return { gbps, loadMs: median(loadMs), streamCounterPackets, forbiddenOutcome };
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await lab.down();
  }
}

/** The 1-conduit policy with the same zones, addresses and stream flow as the large one. */
function smallRuleset(gen: GeneratedPolicy): string {
  const s = gen.stream;
  if (!s) throw new Error('no stream flow');
  const small = generatePolicyModel({ conduits: 1, assets: 2, streamPort: s.port });
  const same =
    small.stream?.from.iface === s.from.iface &&
    small.stream.to.iface === s.to.iface &&
    small.stream.from.assets[0]?.address === s.from.assets[0]?.address &&
    small.stream.to.assets[0]?.address === s.to.assets[0]?.address;
  if (!same) throw new Error('the 1-conduit policy does not carry the same stream');
  const v = validatePolicyText(small.text, 'small.yaml');
  if (!v.policy) throw new Error('the 1-conduit policy does not validate');
  return compilePolicy(v.policy).ruleset;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      conduits: { type: 'string', default: '1000' },
      assets: { type: 'string', default: '5000' },
      zones: { type: 'string' },
      runs: { type: 'string', default: '5' },
      seconds: { type: 'string', default: '5' },
      rounds: { type: 'string', default: '5' },
      'no-throughput': { type: 'boolean', default: false },
      strict: { type: 'boolean', default: false },
    },
  });
  const int = (name: string, text: string | undefined, min: number): number => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name}: an integer ≥ ${min}`);
    return n;
  };
  const conduits = int('conduits', values.conduits, 1);
  const assets = int('assets', values.assets, 0);
  const runs = int('runs', values.runs, 1);
  const seconds = int('seconds', values.seconds, 1);
  const rounds = int('rounds', values.rounds, 1);

  console.log(`bench/compile: generating ${conduits} conduits, ${assets} assets …`);
  const g = timeIt(() =>
    generatePolicyModel({
      conduits,
      assets,
      streamPort: STREAM_PORT,
      ...(values.zones === undefined ? {} : { zones: int('zones', values.zones, 2) }),
    }),
  );
  const gen = g.value;
  const cf = benchCompile(gen, runs);
  cf.generateMs = g.ms;
  const validateMed = median(cf.validateMs);
  const compileMed = median(cf.compileMs);
  console.log(`  validate: ${cf.validateMs.map((ms) => fmtS(ms)).join(', ')}`);
  console.log(`  compile:  ${cf.compileMs.map((ms) => fmtS(ms)).join(', ')}`);

  let tp: ThroughputFigures | undefined;
  let tpSkip: string | undefined;
  if (values['no-throughput']) {
    tpSkip = 'skipped (--no-throughput)';
  } else if (process.getuid?.() !== 0) {
    tpSkip = 'skipped: network namespaces need root';
  } else if ((await run('iperf3', ['--version'], { reject: false })).exitCode !== 0) {
    tpSkip = 'skipped: iperf3 is not installed (make os-deps installs it)';
  } else {
    console.log(
      `bench/compile: throughput, ${rounds} round(s) of ${seconds} s each way, lab ${LAB_PREFIX} …`,
    );
    tp = await benchThroughput(gen, { small: smallRuleset(gen), large: cf.ruleset }, seconds, rounds);
  }

  const compileOk = compileMed / 1000 < COMPILE_GOAL_S;
  const lines = [
    '',
    '== bench/compile summary ==',
    `policy:     ${conduits} conduits, ${assets} assets, ${cf.zones} zones; YAML ${(cf.yamlBytes / 1e6).toFixed(2)} MB (generated in ${fmtS(cf.generateMs)})`,
    `validate:   ${fmtS(validateMed)} (median of ${runs}; ${cf.warnings} lint warnings)`,
    `compile:    ${fmtS(compileMed)} (median of ${runs})  goal < ${COMPILE_GOAL_S} s: ${compileOk ? 'met' : 'MISSED'}`,
    `ruleset:    ${(cf.rulesetBytes / 1e6).toFixed(2)} MB, ${cf.rulesetLines} lines`,
  ];
  let ratioOk = true;
  if (tp) {
    const e = median(tp.gbps.empty);
    const sm = median(tp.gbps.small);
    const l = median(tp.gbps.large);
    // Paired per round (each round measures every state within seconds of each other), then the median:
    // on a shared machine the load drifts far more between rounds than within one.
    const paired = (a: GwState, b: GwState): number =>
      median(tp.gbps[a].map((x, i) => x / (tp.gbps[b][i] ?? NaN)));
    const ratio = paired('large', 'empty');
    const dropped = tp.forbiddenOutcome === 'timeout';
    ratioOk = ratio >= RATIO_GOAL && tp.streamCounterPackets > 0 && dropped;
    const samples = (st: GwState): string => tp.gbps[st].map((x) => x.toFixed(2)).join(' ');
    lines.push(
      `nft load:   ${fmtS(tp.loadMs)} (the ${conduits}-conduit ruleset into the gateway namespace)`,
      `throughput: empty ruleset ${e.toFixed(2)} Gbit/s; 1-conduit ${sm.toFixed(2)}; ${conduits}-conduit ${l.toFixed(2)} Gbit/s (medians of ${rounds} × iperf3 -t ${seconds})`,
      `samples:    empty ${samples('empty')} | 1-conduit ${samples('small')} | ${conduits}-conduit ${samples('large')}`,
      `ratio:      ${conduits}-conduit / empty ${ratio.toFixed(3)} (median of per-round ratios)  goal ≥ ${RATIO_GOAL}: ${ratio >= RATIO_GOAL ? 'met' : 'MISSED'}`,
      `            ${conduits}-conduit / 1-conduit ${paired('large', 'small').toFixed(3)} (the cost of the policy's size alone); 1-conduit / empty ${paired('small', 'empty').toFixed(3)} (the cost of stateful filtering)`,
      `check:      stream flow counter ${tp.streamCounterPackets} packets (> 0: the stream took the conduit chain); ` +
        `a port outside the policy: ${dropped ? 'dropped' : `NOT dropped (${tp.forbiddenOutcome})`}`,
    );
  } else {
    lines.push(`throughput: ${tpSkip ?? 'skipped'}`);
  }
  // The machine may be shared: the load average tells a reader how much to trust the throughput figures.
  lines.push(
    `load avg:   ${loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')} (1/5/15 min) on ${availableParallelism()} CPUs`,
  );
  console.log(lines.join('\n'));
  return values.strict && !(compileOk && ratioOk) ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(`bench/compile: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  },
);
