/**
 * The module's event types. No Matrix MSC defines message franking, so they use an unstable
 * placeholder namespace (the one the ping example uses); README.md documents every shape.
 */
export const PREFIX = 'org.example.franking';

/** Client → server user. */
export const FRANK = `${PREFIX}.frank`;
export const GET_KEYS = `${PREFIX}.keys`;
export const REPORT = `${PREFIX}.report`;
export const LIST_REPORTS = `${PREFIX}.list_reports`;
export const ROTATE_KEY = `${PREFIX}.rotate_key`;

/** Server user → client. */
export const FRANKED = `${PREFIX}.franked`;
export const PUBLIC_KEYS = `${PREFIX}.public_keys`;
export const VERDICT = `${PREFIX}.verdict`;
export const REPORTS = `${PREFIX}.reports`;
export const ERROR = `${PREFIX}.error`;
