/**
 * The `sluice` command line. Each subcommand is a thin shell over the stage modules:
 * load → verify (policies/validate.ts) → generate (policies/compile.ts) → apply (gateway/…).
 * User errors print one clear line on stderr (no stack trace) and exit 1 (invalid input) or 2 (usage).
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { writeFile } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import { SluiceError, UsageError } from '../policies/errors.ts';
import { validatePolicyFile } from '../policies/validate.ts';
import { formatProblem, formatReport, reportJson } from '../policies/format.ts';
import { compilePolicy } from '../policies/compile.ts';

export const EXIT_OK = 0;
export const EXIT_INVALID = 1;
export const EXIT_USAGE = 2;

export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  env: NodeJS.ProcessEnv;
  now: () => Date;
}

const USAGE = `Usage: sluice <command> [options]

Policy:
  validate FILE [--json]                 check a policy: all errors with file:line:column, then the IEC 62443 lint report
  compile FILE [--out F] [--plan F]      print the nftables ruleset (or write it to F) and write the proxy plan

Options for every command:
  -h, --help                             this text
`;

type Handler = (args: string[], io: CliIo) => Promise<number>;

function parse<T extends NonNullable<ParseArgsConfig['options']>>(
  command: string,
  args: string[],
  options: T,
  positionals: { min: number; max: number; names: string },
) {
  let parsed;
  try {
    parsed = parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (err) {
    // parseArgs' messages name the offending option; prefix the command so the user knows where.
    throw new UsageError('cli.usage', `sluice ${command}: ${(err as Error).message}`);
  }
  const n = parsed.positionals.length;
  if (n < positionals.min || n > positionals.max) {
    throw new UsageError(
      'cli.usage',
      `sluice ${command}: expected ${positionals.names}, got ${n === 0 ? 'nothing' : parsed.positionals.join(' ')}`,
    );
  }
  return parsed;
}

const validate: Handler = async (args, io) => {
  const { values, positionals } = parse(
    'validate',
    args,
    { json: { type: 'boolean', default: false } },
    { min: 1, max: 1, names: 'one policy FILE' },
  );
  const file = positionals[0] as string;
  const result = await validatePolicyFile(file, { now: io.now() });
  if (values.json) {
    io.stdout(JSON.stringify(reportJson(result), null, 2) + '\n');
  } else {
    const report = formatReport(result);
    if (result.ok) io.stdout(report);
    else io.stderr(report);
  }
  return result.ok ? EXIT_OK : EXIT_INVALID;
};

const compile: Handler = async (args, io) => {
  const { values, positionals } = parse(
    'compile',
    args,
    { out: { type: 'string' }, plan: { type: 'string' } },
    { min: 1, max: 1, names: 'one policy FILE' },
  );
  const file = positionals[0] as string;
  const result = await validatePolicyFile(file, { now: io.now() });
  if (!result.ok || result.policy === undefined) {
    for (const p of result.errors) io.stderr(formatProblem(p) + '\n');
    io.stderr(`sluice compile: ${file} is not valid; nothing compiled\n`);
    return EXIT_INVALID;
  }
  const { ruleset, plan } = compilePolicy(result.policy);
  if (values.out !== undefined) await writeFile(values.out, ruleset);
  else io.stdout(ruleset);
  if (values.plan !== undefined) await writeFile(values.plan, JSON.stringify(plan, null, 2) + '\n');
  return EXIT_OK;
};

const COMMANDS: Record<string, Handler> = { validate, compile };

export async function main(argv: string[], io: CliIo): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '-h' || command === '--help' || command === 'help') {
    (command === undefined ? io.stderr : io.stdout)(USAGE);
    return command === undefined ? EXIT_USAGE : EXIT_OK;
  }
  const handler = COMMANDS[command];
  if (handler === undefined) {
    io.stderr(`sluice: unknown command '${command}'\n\n${USAGE}`);
    return EXIT_USAGE;
  }
  if (rest.includes('-h') || rest.includes('--help')) {
    io.stdout(USAGE);
    return EXIT_OK;
  }
  try {
    return await handler(rest, io);
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr(`${err.message}\n\n${USAGE}`);
      return EXIT_USAGE;
    }
    if (err instanceof SluiceError && err.userError) {
      io.stderr(`sluice ${command}: ${err.message} [${err.code}]\n`);
      return EXIT_INVALID;
    }
    throw err;
  }
}

/** Runs the CLI on this process's argv and sets the exit code; used by bin/sluice.js. */
export function runCli(): void {
  const io: CliIo = {
    stdout: (t) => process.stdout.write(t),
    stderr: (t) => process.stderr.write(t),
    env: process.env,
    now: () => new Date(),
  };
  main(process.argv.slice(2), io).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      // A bug, not a user error: keep the stack so it can be reported.
      console.error(err);
      process.exitCode = 70;
    },
  );
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) runCli();
