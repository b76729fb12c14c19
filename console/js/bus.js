// In-page events: stream events ('stream:ticket', 'stream:booking', 'stream:prediction',
// 'stream:reconnected') and local changes ('ticket:changed' with the ticket).
const target = new EventTarget();

export function emit(type, detail) {
	target.dispatchEvent(new CustomEvent(type, { detail }));
}

/** Subscribes; returns the unsubscribe function. */
export function on(type, fn) {
	const l = (e) => fn(e.detail);
	target.addEventListener(type, l);
	return () => target.removeEventListener(type, l);
}
