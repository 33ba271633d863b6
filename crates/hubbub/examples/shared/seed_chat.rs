//! The seed's chat, shared by the examples that mount it in another stack:
//! a list of connected clients; a newcomer is greeted and announced, a
//! message goes to everyone as "<id> says: <message>", and a client that
//! leaves is announced.

use std::sync::{Arc, Mutex};

use hubbub::{Connection, Socket};

/// The per-connection setup of the chat.
pub(crate) fn setup() -> impl Fn(&mut Socket) + Send + Sync + 'static {
    let clients: Arc<Mutex<Vec<Connection>>> = Arc::default();
    move |socket| {
        let (open, close, message) = (clients.clone(), clients.clone(), clients.clone());
        socket.on_open(move |conn| {
            let mut all = open.lock().unwrap();
            let _ = conn.send("You have just joined the conversation.");
            for other in all.iter() {
                let _ = other.send(format!("{} joined the conversation.", conn.id()));
            }
            all.push(conn.clone());
        });
        socket.on_close(move |conn, _| {
            let mut all = close.lock().unwrap();
            all.retain(|c| c != conn);
            for other in all.iter() {
                let _ = other.send(format!("{} left the chat room.", conn.id()));
            }
        });
        socket.on_message(move |conn, text| {
            for client in message.lock().unwrap().iter() {
                let _ = client.send(format!("{} says: {text}", conn.id()));
            }
        });
    }
}
