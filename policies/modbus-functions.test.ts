import { describe, expect, it } from 'vitest';
import {
  MODBUS_FUNCTIONS,
  isModbusFunctionCode,
  modbusFunctionCode,
  modbusFunctionName,
} from './modbus-functions.ts';

describe('Modbus function codes', () => {
  it('maps every public name to its code', () => {
    expect(MODBUS_FUNCTIONS.size).toBe(19);
    expect(modbusFunctionCode('read-holding-registers')).toBe(3);
    expect(modbusFunctionCode('write-multiple-registers')).toBe(16);
    expect(modbusFunctionCode('encapsulated-interface-transport')).toBe(43);
  });

  it('accepts public codes and the user-defined ranges 65–72 and 100–110 only', () => {
    const accepted = Array.from({ length: 256 }, (_, i) => i).filter(isModbusFunctionCode);
    expect(accepted).toEqual([
      1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 15, 16, 17, 20, 21, 22, 23, 24, 43, 65, 66, 67, 68, 69, 70, 71, 72, 100,
      101, 102, 103, 104, 105, 106, 107, 108, 109, 110,
    ]);
    expect(modbusFunctionCode(99)).toBeUndefined();
    expect(modbusFunctionCode(3.5)).toBeUndefined();
  });

  it('reads decimal strings as codes and refuses unknown names', () => {
    expect(modbusFunctionCode('16')).toBe(16);
    expect(modbusFunctionCode('99')).toBeUndefined();
    expect(modbusFunctionCode('Read-Coils')).toBeUndefined();
    expect(modbusFunctionCode('constructor')).toBeUndefined();
  });

  it('names codes for reports', () => {
    expect(modbusFunctionName(6)).toBe('write-single-register');
    expect(modbusFunctionName(65)).toBe('user-defined-65');
    expect(modbusFunctionName(99)).toBe('function-99');
  });
});
