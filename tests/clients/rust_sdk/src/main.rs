//! A test client that drives a hearth node with matrix-rust-sdk and
//! matrix-sdk-ui, the engine of Element X, the way Element X drives them:
//! a `SyncService` (Simplified Sliding Sync, MSC4186, found through
//! `/versions`), the room list of `RoomListService` with live updates, a
//! `Timeline` per room, end-to-end encryption, cross-signing and key backup.
//!
//! Usage: `hearth-sdk-client HOMESERVER_URL ALICE BOB PASSWORD [--restart]`
//! — two accounts the caller registered with that password. Alice is the
//! person at the phone; Bob is a second sdk client on the other side. With
//! `--restart` the caller restarts the node near the end (see
//! [`survive_a_restart`]).
//!
//! Every step prints `ok <step> (<ms> ms)`; the first failure prints
//! `FAIL <step>: <what>` and the program exits 1. The last line of a good
//! run is `every step passed`. The sdk's own log goes to stderr, warnings
//! and errors unless `RUST_LOG` says otherwise (e.g. `matrix_sdk=debug`).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{StreamExt, pin_mut};
use matrix_sdk::encryption::CrossSigningResetAuthType;
use matrix_sdk::ruma::api::client::backup::get_latest_backup_info;
use matrix_sdk::ruma::api::client::receipt::create_receipt::v3::ReceiptType;
use matrix_sdk::ruma::api::client::room::create_room;
use matrix_sdk::ruma::api::client::uiaa;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use matrix_sdk::ruma::{OwnedRoomId, OwnedUserId, RoomId};
use matrix_sdk::sliding_sync::VersionBuilder;
use matrix_sdk::{Client, Room, RoomState};
use matrix_sdk_ui::eyeball_im::Vector;
use matrix_sdk_ui::room_list_service::filters::new_filter_non_left;
use matrix_sdk_ui::sync_service::{self, SyncService};
use matrix_sdk_ui::timeline::{RoomExt, Timeline, TimelineReadReceiptTracking};

/// How long any one wait for the server may take.
const WAIT: Duration = Duration::from_secs(20);

/// How many messages Bob sends before Alice reads the room (more than one
/// sliding-sync timeline and one pagination page, so paginating is needed).
const HISTORY: usize = 30;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (restart, args) = match args.split_last() {
        Some((last, rest)) if last == "--restart" => (true, rest),
        _ => (false, args.as_slice()),
    };
    let [url, alice, bob, password] = args else {
        eprintln!("usage: hearth-sdk-client HOMESERVER_URL ALICE BOB PASSWORD [--restart]");
        std::process::exit(2);
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            println!("FAIL start: no tokio runtime: {error}");
            std::process::exit(1);
        }
    };
    match runtime.block_on(session(url, alice, bob, password, restart)) {
        Ok(()) => println!("every step passed"),
        Err(error) => {
            println!("FAIL {error:#}");
            std::process::exit(1);
        }
    }
}

/// Runs `body` as the step `name`: prints `ok` with its time, or returns the
/// error prefixed with the step's name.
async fn step<T>(name: &str, body: impl Future<Output = Result<T>>) -> Result<T> {
    let start = Instant::now();
    match body.await {
        Ok(value) => {
            println!("ok {name} ({} ms)", start.elapsed().as_millis());
            Ok(value)
        }
        Err(error) => Err(error.context(name.to_owned())),
    }
}

/// A person: a logged-in client and its running sync service, with the
/// first error the sync service ran into (unless errors are expected).
struct Person {
    client: Client,
    sync: SyncService,
    sync_error: Arc<Mutex<Option<String>>>,
    errors_expected: Arc<AtomicBool>,
}

impl Person {
    /// Fails with the sync service's error, if it has one.
    fn check_sync(&self) -> Result<()> {
        match self.sync_error.lock().map(|error| error.clone()) {
            Ok(Some(error)) => bail!("the sync service failed: {error}"),
            Ok(None) => Ok(()),
            Err(_) => bail!("the sync error lock is poisoned"),
        }
    }

    /// Polls `check` every 50 ms until it gives a value; fails after
    /// [`WAIT`] with what it last said, or at once if the sync service fails.
    async fn wait_for<T, F, Fut>(&self, what: &str, mut check: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, String>>,
    {
        let deadline = Instant::now() + WAIT;
        loop {
            self.check_sync()?;
            match check().await {
                Ok(value) => return Ok(value),
                Err(state) if Instant::now() > deadline => {
                    bail!("waited {WAIT:?} for {what}; last seen: {state}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The room `room_id` once this person's client knows it in `state`.
    async fn room_in_state(&self, room_id: &RoomId, state: RoomState) -> Result<Room> {
        self.wait_for(&format!("{room_id} to be {state:?}"), || async {
            match self.client.get_room(room_id) {
                Some(room) if room.state() == state => Ok(room),
                Some(room) => Err(format!("{:?}", room.state())),
                None => Err("unknown room".to_owned()),
            }
        })
        .await
    }
}

/// Builds a client the way Element X does (sliding sync discovered in
/// `/versions`), logs in with a password and starts its sync service.
async fn log_in(url: &str, user: &str, password: &str) -> Result<Person> {
    let client = Client::builder()
        .homeserver_url(url)
        .sliding_sync_version_builder(VersionBuilder::DiscoverNative)
        .handle_refresh_tokens()
        .build()
        .await
        .context("building the client (is org.matrix.simplified_msc3575 in /versions?)")?;
    client
        .matrix_auth()
        .login_username(user, password)
        .initial_device_display_name("hearth sdk test client")
        .send()
        .await
        .context("password login")?;
    let sync = SyncService::builder(client.clone()).build().await.context("building the sync service")?;
    let sync_error = Arc::new(Mutex::new(None));
    let errors_expected = Arc::new(AtomicBool::new(false));
    let mut states = sync.state();
    let recorded = sync_error.clone();
    let expected = errors_expected.clone();
    tokio::spawn(async move {
        while let Some(state) = states.next().await {
            if let sync_service::State::Error(error) = state
                && !expected.load(Ordering::SeqCst)
                && let Ok(mut slot) = recorded.lock()
            {
                slot.get_or_insert_with(|| format!("{error:?}"));
            }
        }
    });
    sync.start().await;
    Ok(Person { client, sync, sync_error, errors_expected })
}

/// What Alice's room list shows: the rooms of `RoomListService`'s all-rooms
/// list under the non-left filter, kept up to date from its stream of diffs.
#[derive(Clone, Default)]
struct RoomListView {
    rooms: Arc<Mutex<Vec<(OwnedRoomId, RoomState)>>>,
    updates: Arc<Mutex<usize>>,
}

impl RoomListView {
    fn snapshot(&self) -> Vec<(OwnedRoomId, RoomState)> {
        self.rooms.lock().map(|rooms| rooms.clone()).unwrap_or_default()
    }

    fn state_of(&self, room_id: &RoomId) -> Option<RoomState> {
        self.snapshot().into_iter().find(|(id, _)| id == room_id).map(|(_, state)| state)
    }

    fn describe(&self) -> String {
        format!("{:?}", self.snapshot())
    }
}

/// Follows the room list of `sync` in a task, the way Element X's room list
/// screen does.
async fn follow_room_list(sync: &SyncService) -> Result<RoomListView> {
    let view = RoomListView::default();
    let service = sync.room_list_service();
    let all_rooms = service.all_rooms().await.context("RoomListService::all_rooms")?;
    let shared = view.clone();
    tokio::spawn(async move {
        let (stream, controller) = all_rooms.entries_with_dynamic_adapters(100);
        controller.set_filter(Box::new(new_filter_non_left()));
        pin_mut!(stream);
        let mut items = Vector::new();
        while let Some(diffs) = stream.next().await {
            for diff in diffs {
                diff.apply(&mut items);
            }
            let rooms = items.iter().map(|item| (item.room_id().to_owned(), item.state())).collect();
            if let Ok(mut slot) = shared.rooms.lock() {
                *slot = rooms;
            }
            if let Ok(mut count) = shared.updates.lock() {
                *count += 1;
            }
        }
    });
    Ok(view)
}

/// The bodies of the text messages in a timeline, oldest first, and how
/// many items could not be decrypted.
async fn bodies(timeline: &Timeline) -> (Vec<String>, usize) {
    let mut found = Vec::new();
    let mut undecrypted = 0;
    for item in timeline.items().await.iter() {
        let Some(event) = item.as_event() else { continue };
        if let Some(message) = event.content().as_message() {
            found.push(message.body().to_owned());
        } else if event.content().is_unable_to_decrypt() {
            undecrypted += 1;
        }
    }
    (found, undecrypted)
}

/// Waits until `timeline` shows a message `body` that came back from the
/// server (not only a local echo), and returns the event's ID.
async fn wait_for_remote_message(person: &Person, timeline: &Timeline, body: &str) -> Result<String> {
    person
        .wait_for(&format!("message {body:?} in the timeline"), || async {
            for item in timeline.items().await.iter() {
                let Some(event) = item.as_event() else { continue };
                let Some(message) = event.content().as_message() else { continue };
                if message.body() == body
                    && !event.is_local_echo()
                    && let Some(id) = event.event_id()
                {
                    return Ok(id.to_string());
                }
            }
            let (found, undecrypted) = bodies(timeline).await;
            Err(format!("{} messages (last {:?}), {undecrypted} undecryptable", found.len(), found.last()))
        })
        .await
}

/// Sends `body` through `timeline` (the send queue) and waits for the remote
/// echo.
async fn send_and_echo(person: &Person, timeline: &Timeline, body: &str) -> Result<String> {
    timeline
        .send(RoomMessageEventContent::text_plain(body).into())
        .await
        .map_err(|error| anyhow!("Timeline::send: {error}"))?;
    wait_for_remote_message(person, timeline, body).await
}

/// The master key of `user` as the server serves it to `viewer` now (a
/// fresh `/keys/query`).
async fn master_key_seen_by(viewer: &Person, user: &OwnedUserId) -> Result<String> {
    let identity = viewer
        .client
        .encryption()
        .request_user_identity(user)
        .await
        .with_context(|| format!("querying {user}'s identity"))?
        .with_context(|| format!("the server returned no master key for {user}"))?;
    let key = identity.master_key().get_first_key().context("a master key without a key")?;
    Ok(key.to_base64())
}

/// The password stage of user-interactive auth, in the session `uiaa` opened.
fn password_auth(user: &OwnedUserId, password: &str, uiaa: &uiaa::UiaaInfo) -> uiaa::AuthData {
    let mut auth = uiaa::Password::new(
        uiaa::UserIdentifier::Matrix(uiaa::MatrixUserIdentifier::new(user.to_string())),
        password.to_owned(),
    );
    auth.session = uiaa.session.clone();
    uiaa::AuthData::Password(auth)
}

/// A timeline as Element X opens one: the room subscribed to in the room
/// list's sliding sync (a room subscription), receipts and the read marker
/// tracked.
async fn open_timeline(person: &Person, room: &Room) -> Result<Timeline> {
    person.sync.room_list_service().subscribe_to_rooms(&[room.room_id()]).await;
    room.timeline_builder()
        .track_read_marker_and_receipts(TimelineReadReceiptTracking::AllEvents)
        .build()
        .await
        .map_err(|error| anyhow!("building the timeline: {error}"))
}

/// Creates a private room named `name` inviting `invite`.
async fn create_room(person: &Person, name: &str, invite: &OwnedUserId) -> Result<Room> {
    let mut request = create_room::v3::Request::new();
    request.name = Some(name.to_owned());
    request.invite = vec![invite.clone()];
    request.preset = Some(create_room::v3::RoomPreset::PrivateChat);
    person.client.create_room(request).await.context("createRoom")
}

/// The node restarts under running clients (the caller restarts it on the
/// same address when the client prints `waiting for the node to restart`,
/// then writes a line to the client's stdin). Connection state is gone, so
/// both connections fail (the node is away, then their `pos` is unknown);
/// Element X starts its `SyncService` again when it fails (the sdk's
/// offline mode does the same), and so does this: then a message Bob sends
/// must arrive live in Alice's open timeline.
async fn survive_a_restart(
    alice: &Person,
    bob: &Person,
    alice_timeline: &Timeline,
    bob_timeline: &Timeline,
) -> Result<()> {
    alice.errors_expected.store(true, Ordering::SeqCst);
    bob.errors_expected.store(true, Ordering::SeqCst);
    let (sender, restarted) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let _ = sender.send(());
    });
    println!("waiting for the node to restart");
    let deadline = Instant::now() + WAIT * 3;
    while restarted.try_recv().is_err() {
        if Instant::now() > deadline {
            bail!("no word of the node's restart on stdin within {:?}", WAIT * 3);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    step("after a node restart the sync services start again and a message arrives live", async {
        bob_timeline
            .send(RoomMessageEventContent::text_plain("after the restart").into())
            .await
            .map_err(|error| anyhow!("Timeline::send: {error}"))?;
        let deadline = Instant::now() + WAIT;
        loop {
            for person in [alice, bob] {
                if matches!(person.sync.state().get(), sync_service::State::Error(_)) {
                    person.sync.start().await;
                }
            }
            let arrived = alice_timeline.items().await.iter().any(|item| {
                item.as_event().is_some_and(|event| {
                    !event.is_local_echo()
                        && event
                            .content()
                            .as_message()
                            .is_some_and(|message| message.body() == "after the restart")
                })
            });
            if arrived {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "waited {WAIT:?}; alice's sync service is {:?}, bob's {:?}",
                    alice.sync.state().get(),
                    bob.sync.state().get()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        alice.errors_expected.store(false, Ordering::SeqCst);
        bob.errors_expected.store(false, Ordering::SeqCst);
        for person in [alice, bob] {
            if !matches!(person.sync.state().get(), sync_service::State::Running) {
                bail!("a sync service is {:?} after the restart", person.sync.state().get());
            }
        }
        Ok(())
    })
    .await
}

async fn session(url: &str, alice_name: &str, bob_name: &str, password: &str, restart: bool) -> Result<()> {
    let alice =
        step("alice logs in with a password and starts the sync service", log_in(url, alice_name, password))
            .await?;
    let bob =
        step("bob logs in with a password and starts the sync service", log_in(url, bob_name, password))
            .await?;
    let alice_id = alice.client.user_id().context("alice has no user ID")?.to_owned();
    let bob_id = bob.client.user_id().context("bob has no user ID")?.to_owned();

    let list = step("alice's room list loads (RoomListService, empty account)", async {
        let list = follow_room_list(&alice.sync).await?;
        alice
            .wait_for("the first room list update", || async {
                match list.updates.lock().map(|count| *count) {
                    Ok(count) if count > 0 => Ok(()),
                    _ => Err("no update from the room list stream".to_owned()),
                }
            })
            .await?;
        Ok(list)
    })
    .await?;

    // A room Alice makes herself appears in her list.
    let own = step("alice creates a room and it appears in her room list", async {
        let mut request = create_room::v3::Request::new();
        request.name = Some("Alice's notes".to_owned());
        let room = alice.client.create_room(request).await.context("createRoom")?;
        let id = room.room_id().to_owned();
        alice
            .wait_for("alice's own room in the room list", || async {
                match list.state_of(&id) {
                    Some(RoomState::Joined) => Ok(()),
                    _ => Err(list.describe()),
                }
            })
            .await?;
        Ok(id)
    })
    .await?;

    // A room Bob creates, inviting Alice: it shows in her list live, as an invite.
    let shared_id =
        step("bob creates a room inviting alice; it appears in alice's list as an invite", async {
            let room = create_room(&bob, "Bob's room", &alice_id).await?;
            let id = room.room_id().to_owned();
            alice
                .wait_for("the invite in the room list", || async {
                    match list.state_of(&id) {
                        Some(RoomState::Invited) => Ok(()),
                        _ => Err(list.describe()),
                    }
                })
                .await?;
            Ok(id)
        })
        .await?;

    step("alice accepts the invite; the room turns joined in her list", async {
        let room =
            alice.client.get_room(&shared_id).context("alice's client does not know the invited room")?;
        room.join().await.context("joining")?;
        alice
            .wait_for("the room as joined in the room list", || async {
                match list.state_of(&shared_id) {
                    Some(RoomState::Joined) => Ok(()),
                    _ => Err(list.describe()),
                }
            })
            .await?;
        if list.state_of(&own) != Some(RoomState::Joined) {
            bail!("alice's own room left the list: {}", list.describe());
        }
        Ok(())
    })
    .await?;

    let bob_room = bob.room_in_state(&shared_id, RoomState::Joined).await?;
    let bob_timeline = step("bob opens a timeline", open_timeline(&bob, &bob_room)).await?;
    step(&format!("bob sends {HISTORY} messages"), async {
        for n in 1..=HISTORY {
            bob_timeline
                .send(RoomMessageEventContent::text_plain(format!("history {n}")).into())
                .await
                .map_err(|error| anyhow!("Timeline::send: {error}"))?;
        }
        wait_for_remote_message(&bob, &bob_timeline, &format!("history {HISTORY}")).await?;
        Ok(())
    })
    .await?;

    let alice_room = alice.client.get_room(&shared_id).context("alice's client lost the room")?;
    let (server_count, client_count) = step("alice sees the unread counts of the room", async {
        alice
            .wait_for(&format!("{HISTORY} unread notifications"), || async {
                let server = alice_room.unread_notification_counts();
                let client = alice_room.num_unread_messages();
                // Every message notifies (the `.m.rule.message` default rule). The
                // server may count more than the messages: with no read receipt it
                // counts from the room's start, where the invite (`.m.rule.invite_for_me`)
                // notifies too; Synapse counts from the join instead. The sdk's own
                // count only sees the events that reached it (the room list asks for
                // one event per room, so a burst arrives as a gap): it must only be
                // above zero.
                if server.notification_count as usize >= HISTORY && client > 0 {
                    Ok((server.notification_count, client))
                } else {
                    Err(format!(
                        "server notification_count {}, highlight_count {}; client-side unread messages {client}",
                        server.notification_count, server.highlight_count
                    ))
                }
            })
            .await
    })
    .await?;
    println!(
        "   unread counts: server notification_count {server_count}, client-side unread messages {client_count}"
    );

    let alice_timeline = step("alice opens the room's timeline", open_timeline(&alice, &alice_room)).await?;
    // Opening the room subscribes to it with a longer timeline; the server
    // may answer that with a `limited` timeline, and a limited timeline with
    // a gap makes the sdk's event cache restart the timeline from its last
    // chunk (as with Synapse). So paginate until the whole history is there
    // and the start is reached, not just once to the start.
    step("alice paginates back over the whole history", async {
        let expected: Vec<String> = (1..=HISTORY).map(|n| format!("history {n}")).collect();
        let mut found = Vec::new();
        for _ in 0..30 {
            alice.check_sync()?;
            let hit_start = alice_timeline
                .paginate_backwards(10)
                .await
                .map_err(|error| anyhow!("paginate_backwards: {error}"))?;
            (found, _) = bodies(&alice_timeline).await;
            if hit_start && found == expected {
                return Ok(());
            }
            if hit_start {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        bail!("30 back-paginations left the timeline at {found:?}, not history 1..{HISTORY} in order")
    })
    .await?;

    step("alice sends a message through the timeline and bob receives it", async {
        send_and_echo(&alice, &alice_timeline, "hello from alice").await?;
        wait_for_remote_message(&bob, &bob_timeline, "hello from alice").await?;
        Ok(())
    })
    .await?;

    step("bob sends a message and it arrives live in alice's timeline", async {
        send_and_echo(&bob, &bob_timeline, "hello from bob").await?;
        wait_for_remote_message(&alice, &alice_timeline, "hello from bob").await?;
        Ok(())
    })
    .await?;

    step("alice marks the room read; the unread counts go to zero", async {
        alice_timeline
            .mark_as_read(ReceiptType::Read)
            .await
            .map_err(|error| anyhow!("mark_as_read: {error}"))?;
        alice
            .wait_for("zero unread", || async {
                let server = alice_room.unread_notification_counts();
                let client = alice_room.num_unread_messages();
                if server.notification_count == 0 && client == 0 {
                    Ok(())
                } else {
                    Err(format!(
                        "server notification_count {}; client-side unread messages {client}",
                        server.notification_count
                    ))
                }
            })
            .await
    })
    .await?;

    // End-to-end encryption: room keys go to Bob's device as to-device messages.
    let secret_id = step("alice creates an encrypted room inviting bob", async {
        let room = create_room(&alice, "Secrets", &bob_id).await?;
        room.enable_encryption().await.context("enabling encryption")?;
        alice
            .wait_for("the room to be encrypted", || async {
                // The sdk asks the server when its own view is unknown (its
                // wait for the state event can miss a sync that came first).
                match room.latest_encryption_state().await {
                    Ok(state) if state.is_encrypted() => Ok(()),
                    Ok(state) => Err(format!("{state:?}")),
                    Err(error) => Err(error.to_string()),
                }
            })
            .await?;
        Ok(room.room_id().to_owned())
    })
    .await?;

    let bob_secret = step("bob sees the invite and joins", async {
        let room = bob.room_in_state(&secret_id, RoomState::Invited).await?;
        room.join().await.context("joining")?;
        bob.room_in_state(&secret_id, RoomState::Joined).await
    })
    .await?;
    let alice_secret = alice.room_in_state(&secret_id, RoomState::Joined).await?;
    let alice_secret_timeline = open_timeline(&alice, &alice_secret).await?;
    let bob_secret_timeline = open_timeline(&bob, &bob_secret).await?;

    step("alice waits until bob's join reaches her", async {
        alice
            .wait_for("bob as a joined member", || async {
                match alice_secret.get_member_no_sync(&bob_id).await {
                    Ok(Some(member))
                        if *member.membership()
                            == matrix_sdk::ruma::events::room::member::MembershipState::Join =>
                    {
                        Ok(())
                    }
                    Ok(member) => Err(format!("{:?}", member.map(|member| member.membership().clone()))),
                    Err(error) => Err(error.to_string()),
                }
            })
            .await
    })
    .await?;

    step("alice sends an encrypted message; bob's device decrypts it", async {
        send_and_echo(&alice, &alice_secret_timeline, "a secret from alice").await?;
        wait_for_remote_message(&bob, &bob_secret_timeline, "a secret from alice").await?;
        Ok(())
    })
    .await?;

    step("bob answers encrypted; alice's device decrypts it", async {
        send_and_echo(&bob, &bob_secret_timeline, "a secret from bob").await?;
        wait_for_remote_message(&alice, &alice_secret_timeline, "a secret from bob").await?;
        Ok(())
    })
    .await?;

    // The first upload of cross-signing keys needs no user-interactive auth
    // when the account has none yet (spec v1.11, MSC3967); a server that asks
    // anyway gets the password, as Element X would give it.
    step("alice bootstraps cross-signing", async {
        let encryption = alice.client.encryption();
        if let Err(error) = encryption.bootstrap_cross_signing(None).await {
            let uiaa = error
                .as_uiaa_response()
                .with_context(|| format!("not a user-interactive auth challenge: {error}"))?;
            encryption
                .bootstrap_cross_signing(Some(password_auth(&alice_id, password, uiaa)))
                .await
                .context("bootstrap with the password")?;
        }
        let status = encryption.cross_signing_status().await.context("no cross-signing status")?;
        if !status.is_complete() {
            bail!("cross-signing incomplete after bootstrap: {status:?}");
        }
        Ok(())
    })
    .await?;

    // Replacing the keys must ask for auth (spec: POST /keys/device_signing/upload);
    // Element X's "reset identity" answers with the password. What counts is
    // what the server then serves: the new master key, to Bob too. (The sdk
    // may drop the new private keys locally when a /keys/query answered with
    // the old key lands during the reset; that race is the sdk's, so the
    // local status is not checked here.)
    step(
        "alice resets her cross-signing identity with password UIA; bob's client gets the new master key",
        async {
            let encryption = alice.client.encryption();
            let old = master_key_seen_by(&bob, &alice_id).await?;
            let handle = encryption
                .reset_cross_signing()
                .await
                .context("starting the reset")?
                .context("the server replaced the cross-signing keys without user-interactive auth")?;
            let CrossSigningResetAuthType::Uiaa(uiaa) = handle.auth_type() else {
                bail!("the server asked for OAuth, not user-interactive auth");
            };
            handle
                .auth(Some(password_auth(&alice_id, password, uiaa)))
                .await
                .context("answering with the password")?;
            let new = master_key_seen_by(&bob, &alice_id).await?;
            if new == old {
                bail!("the server still serves the old master key {old}");
            }
            Ok(())
        },
    )
    .await?;

    step("alice creates a key backup and uploads her room keys", async {
        let backups = alice.client.encryption().backups();
        backups.create().await.context("creating the backup")?;
        if !backups.are_enabled().await {
            bail!("the backup is not enabled after create()");
        }
        backups.wait_for_steady_state().await.context("uploading the room keys")?;
        let info = alice
            .client
            .send(get_latest_backup_info::v3::Request::new())
            .await
            .context("reading the backup version back")?;
        if info.count == 0u32.into() {
            bail!("the server's backup version {} holds no keys", info.version);
        }
        Ok(())
    })
    .await?;

    if restart {
        survive_a_restart(&alice, &bob, &alice_timeline, &bob_timeline).await?;
    }

    alice.check_sync()?;
    bob.check_sync()?;
    alice.sync.stop().await;
    bob.sync.stop().await;
    Ok(())
}
