/**
 * nft's ICMP type names (`nft describe icmp type` / `nft describe icmpv6 type`): the only ICMP names a policy
 * may use. Validation checks them; the compiler re-checks before rendering them per address family.
 */
export const ICMP_TYPES_V4: readonly string[] = [
  'echo-reply',
  'destination-unreachable',
  'source-quench',
  'redirect',
  'echo-request',
  'router-advertisement',
  'router-solicitation',
  'time-exceeded',
  'parameter-problem',
  'timestamp-request',
  'timestamp-reply',
  'info-request',
  'info-reply',
  'address-mask-request',
  'address-mask-reply',
];
export const ICMP_TYPES_V6: readonly string[] = [
  'destination-unreachable',
  'packet-too-big',
  'time-exceeded',
  'parameter-problem',
  'echo-request',
  'echo-reply',
  'mld-listener-query',
  'mld-listener-report',
  'mld-listener-done',
  'mld-listener-reduction',
  'nd-router-solicit',
  'nd-router-advert',
  'nd-neighbor-solicit',
  'nd-neighbor-advert',
  'nd-redirect',
  'router-renumbering',
  'ind-neighbor-solicit',
  'ind-neighbor-advert',
  'mld2-listener-report',
];
