/**
 * Error classes with stable codes. User-facing errors (bad input) are printed without stack traces by the
 * CLI and mapped to HTTP 4xx by the API; anything else is a bug and keeps its stack.
 */
export class SluiceError extends Error {
  readonly code: string;
  /** True when the cause is the user's input (file, argument, request), not a fault of Sluice. */
  readonly userError: boolean;
  constructor(code: string, message: string, options?: { cause?: unknown; userError?: boolean }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.userError = options?.userError ?? true;
  }
}

/** A policy file that cannot be read or parsed. */
export class PolicyLoadError extends SluiceError {}

/** A policy that parsed but failed validation or lint; `problems` holds every finding. */
export class PolicyInvalidError extends SluiceError {}

/** Bad command-line usage (exit code 2). */
export class UsageError extends SluiceError {}

/** `nft` refused a ruleset or could not be run. */
export class NftError extends SluiceError {}
