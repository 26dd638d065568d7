\set o random(1, 300000 * :scale)
SELECT oi.product_id, oi.qty, oi.price, p.name FROM order_items oi JOIN products p ON p.id = oi.product_id WHERE oi.order_id = :o;
