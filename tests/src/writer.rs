//! A writer that plays the application: it inserts orders and updates stock on the source, one
//! transaction at a time with asynchronous commit, and remembers what the server acknowledged. It stops when told to, or when the
//! fence makes its writes fail — which is how a test sees that the fence really stopped writes.
use crate::pg::{connect, Side};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::task::JoinHandle;

/// What the writer did.
#[derive(Debug, Default, Clone)]
pub struct Written {
    /// Order ids whose insert committed.
    pub orders: Vec<i64>,
    /// Stock updates that committed, as (product id, new stock).
    pub stock_updates: Vec<(i32, i32)>,
    /// The first error, if writes started failing (the fence).
    pub stopped_by: Option<String>,
}

/// A running writer.
pub struct Writer {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Written>,
}

impl Writer {
    /// Starts writing to `database` on the source.
    pub fn start(database: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let database = database.to_owned();
        let flag = stop.clone();
        let task = tokio::spawn(async move { write_until_stopped(&database, &flag).await });
        Self { stop, task }
    }

    /// Writes so far are being made; stop and report.
    pub async fn stop(self) -> Written {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("writer task")
    }

    /// Waits until writes fail (the fence), then reports; fails the test if no fence comes in 3 minutes.
    pub async fn until_fenced(self) -> Written {
        match tokio::time::timeout(std::time::Duration::from_secs(180), self.task).await {
            Ok(written) => written.expect("writer task"),
            Err(_) => panic!("the writer was never stopped by a fence within 3 minutes"),
        }
    }
}

async fn write_until_stopped(database: &str, stop: &AtomicBool) -> Written {
    let mut written = Written::default();
    let mut client = match connect(Side::Source, database).await {
        Ok(client) => client,
        Err(e) => {
            written.stopped_by = Some(e.to_string());
            return written;
        }
    };
    // Asynchronous commit: a commit is acknowledged before its WAL is flushed, the case where a fence
    // position taken from the WAL write pointer would miss acknowledged writes.
    if let Err(e) = client.batch_execute("SET synchronous_commit = off").await {
        written.stopped_by = Some(describe(&e));
        return written;
    }
    let mut n: i64 = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let result = async {
            let tx = client.transaction().await?;
            let row = tx
                .query_one(
                    "INSERT INTO orders (customer_id, status, ordered_at) \
                     VALUES ((SELECT min(customer_id) FROM customers) + $1::bigint % 100, 'placed', now()) RETURNING order_id",
                    &[&n],
                )
                .await?;
            let product = (n % 50 + 1) as i32;
            let stock = tx
                .query_one("UPDATE products SET stock = stock + 1 WHERE product_id = $1 RETURNING stock", &[&product])
                .await?;
            tx.commit().await?;
            Ok::<_, tokio_postgres::Error>((row.get::<_, i64>(0), product, stock.get::<_, i32>(0)))
        }
        .await;
        match result {
            Ok((order, product, stock)) => {
                written.orders.push(order);
                written.stock_updates.push((product, stock));
            }
            Err(error) => {
                // A terminated session or a read-only transaction: the fence. Try once more on a fresh
                // connection to prove new sessions cannot write either.
                let first = describe(&error);
                match connect(Side::Source, database).await {
                    Ok(fresh) => {
                        let again = fresh.execute("UPDATE products SET stock = stock WHERE product_id = 1", &[]).await;
                        match again {
                            Err(e) => {
                                written.stopped_by = Some(format!("{first}; fresh session: {}", describe(&e)));
                                return written;
                            }
                            Ok(_) => client = fresh, // a transient error before the fence: keep going
                        }
                    }
                    Err(e) => {
                        written.stopped_by = Some(format!("{first}; reconnect: {e}"));
                        return written;
                    }
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    written
}

fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => error.to_string(),
    }
}

/// Checks that everything the writer was told succeeded is on the target.
pub async fn assert_acknowledged_on_target(database: &str, written: &Written) -> anyhow::Result<()> {
    assert_acknowledged_on(Side::Target, database, written).await
}

/// Checks that everything the writer was told succeeded is on `side` (the side that ends primary).
pub async fn assert_acknowledged_on(side: Side, database: &str, written: &Written) -> anyhow::Result<()> {
    let target = connect(side, database).await?;
    let found: i64 = target
        .query_one("SELECT count(*) FROM orders WHERE order_id = ANY($1)", &[&written.orders])
        .await?
        .get(0);
    anyhow::ensure!(found == written.orders.len() as i64, "{} acknowledged orders, {found} on the {side:?}", written.orders.len());
    let mut last = std::collections::BTreeMap::new();
    for (product, stock) in &written.stock_updates {
        last.insert(*product, *stock);
    }
    for (product, stock) in last {
        let on_target: i32 =
            target.query_one("SELECT stock FROM products WHERE product_id = $1", &[&product]).await?.get(0);
        anyhow::ensure!(on_target == stock, "product {product}: acknowledged stock {stock}, the {side:?} has {on_target}");
    }
    Ok(())
}
