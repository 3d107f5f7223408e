import { defineConfig } from 'vitest/config';

// Two projects: "unit" is pure and fast (no root needed); "integration" drives real nft, namespaces,
// ulogd2 and protocol peers, and runs files one at a time so namespace labs never compete for CPU.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: [
            'policies/**/*.test.ts',
            'gateway/**/*.test.ts',
            'protocol-filters/**/*.test.ts',
            'web-ui/**/*.test.ts',
            'examples/**/*.test.ts',
          ],
          testTimeout: 60_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/**/*.test.ts'],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
