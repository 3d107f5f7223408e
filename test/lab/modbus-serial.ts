/**
 * modbus-serial is CommonJS whose module.exports is the client class with ServerTCP hung on it; its typings
 * describe an ES default export instead. This shim gives both a correct type under NodeNext resolution.
 */
import modbusSerial from 'modbus-serial';
import type { ModbusRTU } from 'modbus-serial/ModbusRTU.js';

export type ModbusClient = ModbusRTU;
export const ModbusClient = modbusSerial as unknown as typeof ModbusRTU;
export const ModbusServerTCP = modbusSerial.ServerTCP;
