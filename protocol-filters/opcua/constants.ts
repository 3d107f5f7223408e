/**
 * OPC UA constants the filter needs: security policy URIs and their symmetric signature sizes (Part 7
 * security policy profiles), and the StatusCodes it sends (Part 6 §7.1.5 for TCP errors, Part 4 §7.39 /
 * Part 6 Annex A for the numeric values). Hard-coded rather than looked up in node-opcua-status-code so the
 * refusal path depends on nothing but this file; a test checks them against node-opcua's decoders.
 */
import type { OpcuaSecurityPolicy } from '../../policies/types.ts';

const POLICY_PREFIX = 'http://opcfoundation.org/UA/SecurityPolicy#';

/** Policy URI (as sent in the OPN asymmetric security header) → policy short name. */
export const SECURITY_POLICY_URIS: ReadonlyMap<string, OpcuaSecurityPolicy> = new Map(
  (
    [
      'None',
      'Basic128Rsa15',
      'Basic256',
      'Basic256Sha256',
      'Aes128_Sha256_RsaOaep',
      'Aes256_Sha256_RsaPss',
    ] as const
  ).map((p) => [POLICY_PREFIX + p, p]),
);

export function securityPolicyUri(policy: OpcuaSecurityPolicy): string {
  return POLICY_PREFIX + policy;
}

/**
 * Bytes of the symmetric signature at the end of every MSG/CLO chunk (Part 6 §6.7.2.5), per policy:
 * Basic128Rsa15 and Basic256 sign with HMAC-SHA1 (20 bytes); Basic256Sha256 and both Aes* policies with
 * HMAC-SHA256 (32 bytes); None does not sign.
 */
export const SYMMETRIC_SIGNATURE_LENGTH: Readonly<Record<OpcuaSecurityPolicy, number>> = Object.freeze({
  None: 0,
  Basic128Rsa15: 20,
  Basic256: 20,
  Basic256Sha256: 32,
  Aes128_Sha256_RsaOaep: 32,
  Aes256_Sha256_RsaPss: 32,
});

/**
 * Every symmetric policy encrypts with AES-CBC: in SignAndEncrypt the encrypted part of a chunk (from the
 * sequence header to the end) is a whole number of 16-byte blocks.
 */
export const SYMMETRIC_BLOCK_SIZE = 16;

/** StatusCodes (Part 4 §7.39 values). */
export const STATUS = Object.freeze({
  Good: 0,
  BadDecodingError: 0x80070000,
  BadSecurityChecksFailed: 0x80130000,
  BadCertificateUntrusted: 0x801a0000,
  BadUserAccessDenied: 0x801f0000,
  BadIdentityTokenRejected: 0x80210000,
  BadSecurityModeRejected: 0x80540000,
  BadSecurityPolicyRejected: 0x80550000,
  BadTcpMessageTypeInvalid: 0x807e0000,
  BadTcpMessageTooLarge: 0x80800000,
  BadTcpNotEnoughResources: 0x80810000,
  BadSequenceNumberInvalid: 0x80880000,
  BadRequestTooLarge: 0x80b80000,
});

export const STATUS_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(STATUS).map(([name, value]) => [value, name]),
);

/** DefaultBinary encoding id of ServiceFault (Part 4 §7.35, NodeId ns=0;i=397). */
export const SERVICE_FAULT_ENCODING_ID = 397;
/** DefaultBinary encoding id of OpenSecureChannelRequest / Response (ns=0;i=446 / 449). */
export const OPEN_SECURE_CHANNEL_REQUEST_ID = 446;
export const OPEN_SECURE_CHANNEL_RESPONSE_ID = 449;
/** MessageSecurityMode enumeration (Part 4 §7.20). */
export const MESSAGE_SECURITY_MODE = Object.freeze({ Invalid: 0, None: 1, Sign: 2, SignAndEncrypt: 3 });
